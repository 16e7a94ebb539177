//! Response bodies: the proxy's own ([`ProxyBody::Full`]) and upstream ones streamed through
//! ([`MeteredBody`]): frame by frame, frames the upstream connection already read merged into one
//! write, watched for the metrics (first chunk time, `usage`, how the body ended) and for the
//! idle timeout.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::metrics::Outcome;
use crate::pool::Lease;
use crate::split::Track;
use crate::table::{Arm, Route};
use crate::usage::{usage_of_json, usage_of_sse_line};

/// Error type of response bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Largest non-streamed JSON response kept aside to read its `usage` (bigger ones go uncounted).
const MAX_USAGE_JSON_BYTES: usize = 8 * 1024 * 1024;
/// Longest SSE line kept while looking for `usage`.
const MAX_SSE_LINE_BYTES: usize = 1024 * 1024;

// === impl ProxyBody ===

/// Every response body the proxy sends.
#[derive(Debug)]
pub enum ProxyBody {
    /// A complete body made by the proxy (errors, admin pages).
    Full(Option<Bytes>),
    /// An upstream body streamed through.
    Metered(Box<MeteredBody>),
}

impl From<Bytes> for ProxyBody {
    fn from(bytes: Bytes) -> Self {
        ProxyBody::Full(Some(bytes))
    }
}

impl From<String> for ProxyBody {
    fn from(text: String) -> Self {
        ProxyBody::Full(Some(Bytes::from(text)))
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ProxyBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            ProxyBody::Metered(body) => Pin::new(body.as_mut()).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ProxyBody::Full(bytes) => bytes.is_none(),
            ProxyBody::Metered(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ProxyBody::Full(Some(bytes)) => SizeHint::with_exact(bytes.len() as u64),
            ProxyBody::Full(None) => SizeHint::with_exact(0),
            ProxyBody::Metered(body) => body.size_hint(),
        }
    }
}

// === impl MeteredBody ===

#[derive(Debug)]
pub(crate) enum UsageScan {
    Off,
    Sse { line: Vec<u8> },
    Json { buf: Vec<u8> },
}

/// An upstream response body passed through frame by frame, with the metrics watching it.
#[derive(Debug)]
pub struct MeteredBody {
    inner: Incoming,
    route: Arc<Route>,
    track: Track,
    started: Instant,
    outcome_on_end: Outcome,
    is_sse: bool,
    seen_first_chunk: bool,
    idle_timeout: Duration,
    idle: Option<Pin<Box<tokio::time::Sleep>>>,
    scan: UsageScan,
    usage: Option<(u64, u64)>,
    finished: bool,
    /// Data already taken from upstream but not yet handed out (see [`MAX_COALESCED_BYTES`]).
    held: Option<Held>,
    /// The upstream had nothing more once already while data was held: one more round, then
    /// the held data goes out (a single round is often too early: hyper polls twice per wake).
    waited_once: bool,
    /// What the upstream produced after `held` (an end, an error, trailers): handed out next.
    deferred: Option<Option<Result<Frame<Bytes>, BoxError>>>,
    /// Data went out since the body last returned `Pending`: hyper may still hold it unwritten,
    /// and it drops the connection without flushing when a body fails.
    unflushed: bool,
    /// The plain-HTTP upstream connection this body arrives on: given back when the body has
    /// been read to its end, dropped (closing it) when it fails or is cut.
    lease: Option<Lease>,
}

/// Most bytes of consecutive upstream frames merged into one frame for the client.
///
/// hyper's client hands body frames over one at a time, so a burst of SSE events read in one
/// `recv` would otherwise cost one `writev` per event. Frames are merged only while the
/// upstream connection already holds more: the merged frame goes out as soon as it has nothing
/// more to give right now (one scheduler round, no waiting), so streams are never delayed.
const MAX_COALESCED_BYTES: usize = 32 * 1024;

#[derive(Debug)]
enum Held {
    One(Bytes),
    Many(bytes::BytesMut),
}

impl Held {
    fn len(&self) -> usize {
        match self {
            Held::One(bytes) => bytes.len(),
            Held::Many(buf) => buf.len(),
        }
    }

    fn push(self, data: &Bytes) -> Held {
        let mut buf = match self {
            Held::One(first) => {
                let mut buf = bytes::BytesMut::with_capacity(first.len() + data.len() * 4);
                buf.extend_from_slice(&first);
                buf
            }
            Held::Many(buf) => buf,
        };
        buf.extend_from_slice(data);
        Held::Many(buf)
    }

    fn into_bytes(self) -> Bytes {
        match self {
            Held::One(bytes) => bytes,
            Held::Many(buf) => buf.freeze(),
        }
    }
}

impl MeteredBody {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        inner: Incoming,
        route: Arc<Route>,
        track: Track,
        started: Instant,
        outcome_on_end: Outcome,
        is_sse: bool,
        idle_timeout: Duration,
        scan: UsageScan,
        lease: Option<Lease>,
    ) -> Self {
        let mut body = MeteredBody {
            inner,
            route,
            track,
            started,
            outcome_on_end,
            is_sse,
            seen_first_chunk: false,
            idle_timeout,
            idle: None,
            scan,
            usage: None,
            finished: false,
            held: None,
            waited_once: false,
            deferred: None,
            unflushed: false,
            lease,
        };
        // An empty body may never be polled: account for it now.
        if body.inner.is_end_stream() {
            body.finish(outcome_on_end);
        }
        body
    }

    fn arm(&self) -> &Arm {
        self.route.arm(self.track)
    }

    fn finish(&mut self, outcome: Outcome) {
        if self.finished {
            return;
        }
        self.finished = true;
        self.idle = None;
        let lease = self.lease.take();
        if let Some(lease) = lease
            && outcome != Outcome::StreamAborted
            && outcome != Outcome::Timeout
        {
            lease.release();
        }
        if let UsageScan::Json { buf } = &self.scan
            && !buf.is_empty()
        {
            self.usage = usage_of_json(buf);
        }
        let arm = self.route.arm(self.track);
        arm.metrics.record(outcome, self.started.elapsed());
        if let Some((prompt, completion)) = self.usage {
            arm.metrics.record_tokens(prompt, completion);
        }
        if outcome == Outcome::StreamAborted || outcome == Outcome::Timeout {
            tracing::warn!(
                rollout = %self.route.document.rollout,
                track = self.track.as_str(),
                reason = outcome.reason(),
                "upstream response body ended early"
            );
        }
    }

    fn on_data(&mut self, data: &Bytes) {
        if data.is_empty() {
            return;
        }
        if !self.seen_first_chunk {
            self.seen_first_chunk = true;
            if self.is_sse {
                self.arm().metrics.record_ttft(self.started.elapsed());
            }
        }
        match &mut self.scan {
            UsageScan::Off => {}
            UsageScan::Json { buf } => {
                if buf.len() + data.len() <= MAX_USAGE_JSON_BYTES {
                    buf.extend_from_slice(data);
                } else {
                    self.scan = UsageScan::Off;
                }
            }
            UsageScan::Sse { line } => {
                let mut rest: &[u8] = data;
                while let Some(newline) = memchr::memchr(b'\n', rest) {
                    let found = if line.is_empty() {
                        usage_of_sse_line(&rest[..newline])
                    } else {
                        line.extend_from_slice(&rest[..newline]);
                        let found = usage_of_sse_line(line);
                        line.clear();
                        found
                    };
                    if found.is_some() {
                        self.usage = found;
                    }
                    rest = &rest[newline + 1..];
                }
                if line.len() + rest.len() <= MAX_SSE_LINE_BYTES {
                    line.extend_from_slice(rest);
                } else {
                    line.clear();
                }
            }
        }
    }
}

impl MeteredBody {
    /// One upstream frame, watched for the metrics and the idle timeout.
    fn poll_upstream(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self;
        if this.finished && this.inner.is_end_stream() {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.on_data(data);
                }
                if this.inner.is_end_stream() {
                    this.finish(this.outcome_on_end);
                } else if let Some(idle) = &mut this.idle {
                    idle.as_mut().reset(tokio::time::Instant::now() + this.idle_timeout);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => {
                this.finish(Outcome::StreamAborted);
                Poll::Ready(Some(Err(Box::new(error))))
            }
            Poll::Ready(None) => {
                this.finish(this.outcome_on_end);
                Poll::Ready(None)
            }
            Poll::Pending => {
                if this.finished || this.idle_timeout.is_zero() {
                    return Poll::Pending;
                }
                let timeout = this.idle_timeout;
                let idle = this.idle.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                if idle.as_mut().poll(cx).is_ready() {
                    this.finish(Outcome::Timeout);
                    return Poll::Ready(Some(Err(format!(
                        "upstream sent nothing for {timeout:?} (--idle-timeout)"
                    )
                    .into())));
                }
                Poll::Pending
            }
        }
    }

    /// Hands out what is held and keeps `next` for the following poll.
    fn release_before(
        &mut self,
        next: Option<Result<Frame<Bytes>, BoxError>>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.held.take() {
            Some(held) => {
                self.deferred = Some(next);
                Poll::Ready(Some(Ok(Frame::data(held.into_bytes()))))
            }
            None => Poll::Ready(next),
        }
    }
}

impl Body for MeteredBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match this.poll_merged(cx) {
            // Data handed out just before a failure would be lost with the connection: one
            // round of Pending first lets hyper write it, so the client sees every byte before
            // the cut.
            Poll::Ready(Some(Err(error))) if this.unflushed => {
                this.unflushed = false;
                this.deferred = Some(Some(Err(error)));
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            Poll::Ready(Some(Ok(frame))) => {
                this.unflushed = true;
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Pending => {
                this.unflushed = false;
                Poll::Pending
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.held.is_none() && !matches!(self.deferred, Some(Some(_))) && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl MeteredBody {
    /// The next frame: upstream frames already available merged into one (see [`Held`]).
    fn poll_merged(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self;
        if let Some(next) = this.deferred.take() {
            return Poll::Ready(next);
        }
        match this.poll_upstream(cx) {
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) => {
                    let held = match this.held.take() {
                        None => Held::One(data),
                        Some(held) => held.push(&data),
                    };
                    if this.inner.is_end_stream() || held.len() >= MAX_COALESCED_BYTES {
                        return Poll::Ready(Some(Ok(Frame::data(held.into_bytes()))));
                    }
                    this.waited_once = false;
                    this.held = Some(held);
                    // Let the upstream connection's task run once: it passes on what it has
                    // already read, or has nothing and the held data goes out on the next poll.
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
                Err(frame) => this.release_before(Some(Ok(frame))),
            },
            Poll::Ready(other) => this.release_before(other),
            Poll::Pending => match this.held.take() {
                Some(held) if !this.waited_once => {
                    this.waited_once = true;
                    this.held = Some(held);
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
                Some(held) => {
                    this.waited_once = false;
                    Poll::Ready(Some(Ok(Frame::data(held.into_bytes()))))
                }
                None => Poll::Pending,
            },
        }
    }
}

impl Drop for MeteredBody {
    fn drop(&mut self) {
        if !self.finished {
            self.finished = true;
            self.arm().metrics.record_cancelled();
            tracing::debug!(
                rollout = %self.route.document.rollout,
                track = self.track.as_str(),
                "client went away before the response ended; upstream request cancelled"
            );
        }
    }
}
