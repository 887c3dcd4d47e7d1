//! Serving a router on a TCP listener so that slow and idle clients cannot
//! take the server down: HTTP/1.1 connections with a header-read timeout, an
//! idle keep-alive timeout, a bound on concurrent connections, and a drain
//! timeout on shutdown.
//!
//! - **Header-read timeout** (`header_read_timeout`, default 10 s): a
//!   connection must deliver a complete request head within it, counted from
//!   when the connection is accepted (hyper's timer), or it is closed.
//! - **Idle timeout** (`idle_timeout`, default 60 s): a connection with no
//!   request in flight that neither reads nor writes a byte for this long is
//!   closed. A request in flight is bounded by the request timeout instead.
//! - **Connection cap** (`max_connections`, default 1024): at most this many
//!   connections are open at once; beyond it the server stops accepting (new
//!   clients wait in the kernel's backlog) instead of running out of file
//!   descriptors. Every held slot is freed by one of the two timeouts above,
//!   so a flood of half-sent requests delays others by at most the
//!   header-read timeout. An accept error (e.g. too many open files) pauses
//!   accepting for 100 ms instead of spinning.
//! - **Drain** (`drain_timeout`, default 10 s): on shutdown the listener
//!   stops accepting, every connection is asked to finish its request in
//!   flight and close, and whatever is still open after the drain timeout is
//!   dropped, so one stuck client cannot keep a terminated server alive.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::time::{Instant, Sleep};
use tower::ServiceExt;

/// The connection limits of a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnLimits {
    /// How long a client may take to send a complete request head. Default 10 s.
    pub header_read_timeout: Duration,
    /// How long a connection without a request in flight may stay silent. Default 60 s.
    pub idle_timeout: Duration,
    /// The most connections open at once. Default 1024.
    pub max_connections: usize,
    /// How long shutdown waits for requests in flight. Default 10 s.
    pub drain_timeout: Duration,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 1024,
            drain_timeout: Duration::from_secs(10),
        }
    }
}

/// Serves `router` on `listener` within `limits` until `shutdown` resolves,
/// then drains (see the module docs).
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnLimits,
    shutdown: impl Future<Output = ()> + Send,
) -> io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            () = &mut shutdown => break,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(s) => s,
                Err(_) => break,
            },
        };
        let (stream, _peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed; pausing 100 ms");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let inflight = Arc::new(AtomicUsize::new(0));
        let io = TokioIo::new(IdleIo::new(stream, limits.idle_timeout, inflight.clone()));
        let router = router.clone();
        let service =
            hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let guard = InFlight::enter(inflight.clone());
                let router = router.clone();
                async move {
                    let res = router.oneshot(req.map(axum::body::Body::new)).await;
                    drop(guard);
                    res
                }
            });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .serve_connection(io, service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _slot = slot;
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(limits.drain_timeout) => {
            tracing::warn!(drain = ?limits.drain_timeout, "connections still open after the drain timeout were dropped");
        }
    }
    Ok(())
}

/// Counts a request in flight on its connection while alive.
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn enter(n: Arc<AtomicUsize>) -> Self {
        n.fetch_add(1, Ordering::SeqCst);
        InFlight(n)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A TCP stream that fails its reads with `TimedOut` once it has moved no
/// byte for `idle` while no request is in flight on it.
struct IdleIo {
    inner: TcpStream,
    idle: Duration,
    last: Instant,
    sleep: Pin<Box<Sleep>>,
    inflight: Arc<AtomicUsize>,
}

impl IdleIo {
    fn new(inner: TcpStream, idle: Duration, inflight: Arc<AtomicUsize>) -> Self {
        let now = Instant::now();
        IdleIo {
            inner,
            idle,
            last: now,
            sleep: Box::pin(tokio::time::sleep_until(now + idle)),
            inflight,
        }
    }

    fn touch(&mut self) {
        self.last = Instant::now();
    }
}

impl AsyncRead for IdleIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    self.touch();
                }
                return Poll::Ready(r);
            }
            Poll::Pending => {}
        }
        loop {
            let now = Instant::now();
            let deadline = if self.inflight.load(Ordering::SeqCst) > 0 {
                // A request is being answered: not idle.
                self.last = now;
                now + self.idle
            } else {
                self.last + self.idle
            };
            if deadline <= now {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "idle connection closed",
                )));
            }
            if self.sleep.deadline() != deadline {
                self.sleep.as_mut().reset(deadline);
            }
            match self.sleep.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(()) => continue,
            }
        }
    }
}

impl AsyncWrite for IdleIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
