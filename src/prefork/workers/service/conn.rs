//! The tower mode's connections: each served by hyper (upgrades included) until it ends, is idle
//! past the keep-alive time, or, during a drain, idle past the drain grace.

use std::future::{poll_fn, Future};
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{watch, Notify};

use super::overdue::Fence;
use super::request::{ConnState, Shared, Tracked};
use super::{AnswerBody, AppService};
use crate::http::wire::proxy_protocol;
use crate::http::AcceptPolicy;

/// During a drain, how long a connection with no request under way may wait for its next one
/// (from the drain's start or its last answer): a request that comes in time is answered with
/// `Connection: close`; after that the connection is closed. As the HTTP server's drain grace.
const DRAIN_GRACE: Duration = Duration::from_secs(1);

/// A connection's socket, counted open in [`Shared::conns`] (and the shared metrics) for as long
/// as it lives: in hyper's connection, then, once upgraded (a WebSocket), in the upgrade's task,
/// so that the drain waits for it too. Its writes go through the connection's [`Fence`]: once the
/// lifeline answered on it (a 504 from outside a blocked runtime), they fail.
struct Counted<IO> {
    io: IO,
    shared: &'static Shared,
    fence: Arc<Fence>,
}

impl<IO: AsRawFd> Counted<IO> {
    fn new(io: IO, shared: &'static Shared) -> Self {
        shared.conns.fetch_add(1, Ordering::AcqRel);
        shared.counters.opened();
        Counted {
            fence: Arc::new(Fence::new(io.as_raw_fd())),
            io,
            shared,
        }
    }
}

impl<IO> Counted<IO> {
    /// Runs `write` (on the socket, `n` bytes by its result) through the fence.
    fn fenced<T>(
        &mut self,
        write: impl FnOnce(Pin<&mut IO>) -> Poll<io::Result<T>>,
        n: impl FnOnce(&T) -> usize,
    ) -> Poll<io::Result<T>>
    where
        IO: Unpin,
    {
        let Some(pass) = self.fence.begin() else {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the connection was answered 504 from outside the blocked runtime",
            )));
        };
        let out = write(Pin::new(&mut self.io));
        let wrote = match &out {
            Poll::Ready(Ok(v)) => n(v),
            _ => 0,
        };
        self.fence.end(pass, wrote);
        out
    }
}

impl<IO> Drop for Counted<IO> {
    fn drop(&mut self) {
        // The socket is closed after this (its field's drop): not while the lifeline writes.
        self.fence.close();
        self.shared.counters.closed();
        let left = self.shared.conns.fetch_sub(1, Ordering::AcqRel) - 1;
        if let Some(gate) = &self.shared.gate {
            // One fewer here: published at once, a waiting sibling (or this process) may take.
            gate.conn_closed(left);
        }
        if left == 0 {
            self.shared.idle.notify_waiters();
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Counted<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

/// `AsyncWrite` for a wrapper whose writes all go to its `io` field as they are (`Rewind`).
macro_rules! write_through {
    ($wrapper:ident) => {
        impl<IO: AsyncWrite + Unpin> AsyncWrite for $wrapper<IO> {
            fn poll_write(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                b: &[u8],
            ) -> Poll<io::Result<usize>> {
                Pin::new(&mut self.get_mut().io).poll_write(cx, b)
            }

            fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                Pin::new(&mut self.get_mut().io).poll_flush(cx)
            }

            fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
            }

            fn poll_write_vectored(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                bufs: &[io::IoSlice<'_>],
            ) -> Poll<io::Result<usize>> {
                Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
            }

            fn is_write_vectored(&self) -> bool {
                self.io.is_write_vectored()
            }
        }
    };
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Counted<IO> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        self.get_mut().fenced(|io| io.poll_write(cx, b), |&n| n)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Not while the lifeline writes; after its answer the socket is shut down already.
        match self.get_mut().fenced(|io| io.poll_shutdown(cx), |_| 0) {
            Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::BrokenPipe => Poll::Ready(Ok(())),
            other => other,
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .fenced(|io| io.poll_write_vectored(cx, bufs), |&n| n)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// Reads a PROXY protocol header from the start of `io` within `timeout`: the connection with
/// what was read past the header, and the source it names; `None` (the connection is dropped,
/// without an answer) when it is missing, malformed, cut or late.
async fn proxy_header<IO: AsyncRead + Unpin>(
    mut io: IO,
    timeout: Duration,
) -> Option<(Rewind<IO>, Option<SocketAddr>)> {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::with_capacity(256);
    let read = async {
        loop {
            let mut chunk = [0u8; 512];
            let n = io.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
            match proxy_protocol::parse(&buf) {
                Ok(Some(parsed)) => return Some(parsed),
                Ok(None) => {}
                Err(why) => {
                    log::debug!("a connection's PROXY header was refused: {}", why.0);
                    return None;
                }
            }
        }
    };
    let (len, source) = tokio::time::timeout(timeout, read).await.ok()??;
    let rest = buf.split_off(len);
    Some((Rewind::new(io, rest), source))
}

/// A connection with bytes already read from it in front (what came after a PROXY header).
struct Rewind<IO> {
    io: IO,
    prefix: Vec<u8>,
    at: usize,
}

impl<IO> Rewind<IO> {
    fn new(io: IO, prefix: Vec<u8>) -> Self {
        Rewind { io, prefix, at: 0 }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Rewind<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        if me.at < me.prefix.len() {
            let n = (me.prefix.len() - me.at).min(buf.remaining());
            buf.put_slice(&me.prefix[me.at..me.at + n]);
            me.at += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut me.io).poll_read(cx, buf)
    }
}

write_through!(Rewind);

/// `fut`'s output, or `None` once `other` is ready.
pub(super) async fn or_else<F: Future, T: Future>(fut: F, other: T) -> Option<F::Output> {
    let mut fut = pin!(fut);
    let mut other = pin!(other);
    poll_fn(|cx| {
        if let Poll::Ready(out) = fut.as_mut().poll(cx) {
            return Poll::Ready(Some(out));
        }
        if other.as_mut().poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        Poll::Pending
    })
    .await
}

/// `fut`'s output, or `None` once `other` is ready; `other` is polled at the first poll and then
/// only once its own waker (`flag`'s) woke the task, not at every wake-up of `fut` (once a
/// request or more). (`flag` is reused from one call to the next.)
async fn or_woken<F: Future, T: Future>(
    fut: Pin<&mut F>,
    other: T,
    flag: &TimerFlag,
    flag_waker: &Waker,
) -> Option<F::Output> {
    let mut fut = fut;
    let mut other = pin!(other);
    let mut registered = false;
    poll_fn(|cx| {
        if let Poll::Ready(out) = fut.as_mut().poll(cx) {
            return Poll::Ready(Some(out));
        }
        if registered {
            // Cleared before the poll: a wake-up during it is seen at the next.
            if !flag.fired.swap(false, Ordering::AcqRel) {
                return Poll::Pending;
            }
        } else {
            flag.fired.store(false, Ordering::Relaxed);
            *flag.task.lock().unwrap_or_else(|p| p.into_inner()) = Some(cx.waker().clone());
            registered = true;
        }
        if other
            .as_mut()
            .poll(&mut Context::from_waker(flag_waker))
            .is_ready()
        {
            return Poll::Ready(None);
        }
        Poll::Pending
    })
    .await
}

/// Serves one connection until it ends. A connection with no request under way is closed once
/// it has been idle for the keep-alive time or the head timeout, whichever is shorter (before
/// its first request: the head timeout), or, during a drain, for [`DRAIN_GRACE`] (from the
/// drain's start or its last answer).
pub(super) fn serve_connection<IO, S, B>(
    io: IO,
    peer: Option<SocketAddr>,
    shared: &'static Shared,
    service: S,
) where
    IO: AsyncRead + AsyncWrite + AsRawFd + Unpin + Send + 'static,
    S: AppService<B>,
    B: AnswerBody,
{
    let io = Counted::new(io, shared);
    let fence = io.fence.clone();
    tokio::spawn(async move {
        let socket_peer = peer.map_or_else(|| "unix".into(), |p| p.ip().to_canonical().to_string());
        let socket_addr = peer;
        let (io, peer) = if shared.cfg.proxy_protocol {
            match proxy_header(io, shared.cfg.head_timeout).await {
                // The PROXY header's source is the peer from here on (the socket's stays the
                // `SocketPeer`); a header without an address leaves the socket's.
                Some((io, source)) => (io, source.or(peer)),
                None => return,
            }
        } else {
            (Rewind::new(io, Vec::new()), peer)
        };
        let state = Arc::new(ConnState {
            in_flight: AtomicUsize::new(0),
            answered: AtomicU64::new(0),
            h2: AtomicBool::new(false),
            answer: Notify::new(),
            last_answer: Mutex::new(Instant::now()),
            peer,
            socket_addr,
            socket_peer: socket_peer.into(),
            fence,
        });
        let tracked = Tracked {
            inner: service,
            shared,
            conn: state.clone(),
        };
        #[cfg(feature = "tls")]
        if let Some(acceptor) = &shared.tls {
            // The handshake within the head timeout, as a first request head must come.
            let accept = tokio::time::timeout(shared.cfg.head_timeout, acceptor.accept(io));
            match accept.await {
                Ok(Ok(io)) => serve_http(io, tracked, shared, &state).await,
                Ok(Err(e)) => {
                    let ip = socket_addr.map(|a| a.ip());
                    crate::http::tls::log_handshake_failure(ip, &e);
                }
                Err(_) => {}
            }
            return;
        }
        serve_http(io, tracked, shared, &state).await;
    });
}

/// Serves HTTP on `io` (plain, or TLS once its handshake is done) until the connection ends.
async fn serve_http<IO, S, B>(
    io: IO,
    tracked: Tracked<S>,
    shared: &'static Shared,
    state: &ConnState,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: AppService<B>,
    B: AnswerBody,
{
    let io = TokioIo::new(io);
    if shared.cfg.http2 {
        let builder = shared.cfg.auto();
        let conn = pin!(builder.serve_connection_with_upgrades(io, tracked));
        drive(conn, |c| c.graceful_shutdown(), shared, state).await;
    } else {
        let conn = pin!(shared
            .cfg
            .http1()
            .serve_connection(io, tracked)
            .with_upgrades());
        drive(conn, |c| c.graceful_shutdown(), shared, state).await;
    }
}

/// Drives a connection until it ends, closing it once idle past its limit (see
/// [`serve_connection`]); `shutdown` is its graceful shutdown.
///
/// Off the request path: one timer per connection, re-armed only when it fires or the limit
/// changes (at the first answer, at a drain), and no wake-up at each later answer. When it fires
/// the limit is counted again from the last answer (a later one re-arms it, which tokio does
/// with one atomic store); a connection busy then waits for its answer, and the idle limit
/// starts from there.
async fn drive<C: Future>(
    mut conn: Pin<&mut C>,
    shutdown: impl Fn(Pin<&mut C>),
    shared: &Shared,
    state: &ConnState,
) {
    let mut drain_start = None;
    let mut timer = pin!(tokio::time::sleep_until(Instant::now().into()));
    let flag = Arc::new(TimerFlag::default());
    let flag_waker = Waker::from(flag.clone());
    // The wake-ups below (the timer, an answer, the drain) wake the task through this flag.
    let woke = Arc::new(TimerFlag::default());
    let woke_waker = Waker::from(woke.clone());
    loop {
        let stopping = shared.stopping();
        if stopping && drain_start.is_none() {
            drain_start = Some(Instant::now());
        }
        if stopping && state.h2.load(Ordering::Relaxed) {
            // HTTP/2: a GOAWAY now; the streams under way finish, new ones go elsewhere.
            shutdown(conn.as_mut());
            let _ = conn.as_mut().await;
            break;
        }
        let first = state.answered.load(Ordering::Relaxed) == 0;
        let limit = if stopping {
            DRAIN_GRACE
        } else if first {
            // No request yet: the client has the head timeout for its first head.
            shared.cfg.head_timeout
        } else {
            // The next head is waited for from the last answer too: the head timeout (checked
            // here, not by hyper) closes an idle connection when it comes first.
            shared.cfg.keepalive.min(shared.cfg.head_timeout)
        };
        let busy = state.in_flight.load(Ordering::Acquire) > 0;
        let last = *state.last_answer.lock().unwrap_or_else(|p| p.into_inner());
        let from = drain_start.map_or(last, |d| last.max(d));
        let until = from + limit;
        if !busy && Instant::now() >= until {
            if first {
                // No head came in time (or only part of one): closed without an answer. (hyper's
                // graceful shutdown would wait for the first request.)
                break;
            }
            // Idle for the whole limit: close it (at once, as nothing is under way).
            shutdown(conn.as_mut());
            let _ = conn.as_mut().await;
            break;
        }
        if !busy {
            timer.as_mut().reset(until.into());
        }
        let stop = shared.stop.clone();
        let timer = elapsed(timer.as_mut(), &flag, &flag_waker);
        let wake = async move {
            // Busy: until its answer (then the idle limit starts); idle: until the limit, when
            // it is counted again from the last answer; before the first answer, also until it
            // (the limit after it may be shorter than the head timeout).
            let timer = async move {
                if busy {
                    state.answer.notified().await;
                } else if first {
                    or_else(timer, state.answer.notified()).await;
                } else {
                    timer.await;
                }
            };
            if stopping {
                timer.await;
            } else {
                or_else(timer, drained(stop, shared)).await;
            }
        };
        if or_woken(conn.as_mut(), wake, &woke, &woke_waker)
            .await
            .is_some()
        {
            break;
        }
    }
}

/// A waker of the connection's task that leaves a mark: whether it woke it (the timer fired, an
/// answer or the drain came), and the task it wakes.
#[derive(Default)]
struct TimerFlag {
    fired: AtomicBool,
    task: Mutex<Option<Waker>>,
}

impl Wake for TimerFlag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.fired.store(true, Ordering::Release);
        if let Some(task) = &*self.task.lock().unwrap_or_else(|p| p.into_inner()) {
            task.wake_by_ref();
        }
    }
}

/// Resolves once `timer` fired. The timer is polled (its waker registered, the runtime's budget
/// counted) at the first poll and then only once its own waker, `flag_waker`, woke the task,
/// not at every wake-up of the connection (once a request or more).
async fn elapsed(mut timer: Pin<&mut tokio::time::Sleep>, flag: &TimerFlag, flag_waker: &Waker) {
    let mut registered = false;
    poll_fn(|cx| {
        if registered {
            if !flag.fired.load(Ordering::Acquire) {
                return Poll::Pending;
            }
            flag.fired.store(false, Ordering::Relaxed);
        } else {
            *flag.task.lock().unwrap_or_else(|p| p.into_inner()) = Some(cx.waker().clone());
            registered = true;
        }
        timer.as_mut().poll(&mut Context::from_waker(flag_waker))
    })
    .await
}

/// Resolves once the worker drains. The wait on the stop watch registers the task at its first
/// poll; the later polls (at every wake-up of the connection, once a request) look at the drain
/// flag instead of taking the watch's lock, which every connection of the process shares. (A
/// task's waker stays the same, so the one registration wakes it.)
async fn drained(mut stop: watch::Receiver<bool>, shared: &Shared) {
    let mut wait = pin!(stop.wait_for(|s| *s));
    let mut registered = false;
    poll_fn(|cx| {
        if registered && !shared.stopping() {
            return Poll::Pending;
        }
        registered = true;
        wait.as_mut().poll(cx).map(|_| ())
    })
    .await
}
