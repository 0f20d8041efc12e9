//! The ports of the hand-off between the connection, the pool and back: what the connection, the
//! lane, the reactor and the pool's dispatch exchange. The settings ([`ConnConfig`]) and the
//! shared state ([`Handoff`]); where complete requests go ([`Dispatch`], completed through a
//! [`Done`]); what an answer needs to know about its request ([`Reply`]) and where it goes back
//! to ([`AnswerBack`]: the connection, which serialises, writes and acts on it, `answer.rs`, then
//! [`Answer`]: what the connection's state machine acts on); [`finish`]: complete a request through
//! its connection's [`AnswerBack`]; and the depth rules. A complete request goes out through
//! [`Handoff::submit`] (`dispatch.rs`). The reactor, the lane, the connection, the dispatch and
//! the answer import this file; it imports none of them.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderMap, Version};
use mio::Waker;

use crate::http::engine::io::Link;
use crate::http::engine::stream::StreamCounters;
use crate::http::ops::access_log::{AccessLogFormat, LogRequest};
use crate::http::ops::forwarded::ProxySettings;
use crate::http::ops::health::{HealthRoutes, HealthView};
use crate::http::ops::metrics::{CounterStore, HttpCounters, ServerMetrics};
use crate::http::ops::stuck::BusyWorker;
use crate::http::self_call::calls::SiblingPids;
use crate::http::self_call::owner_lookup::OwnerLookup;
use crate::http::self_call::spare::Spares;
use crate::http::types::{HttpRequest, HttpResponse};
use crate::http::wire::parse::Limits;
use crate::http::wire::response::ErrorPage;
use crate::Error;

/// The request header that carries how deep a request is in a chain of calls a service makes to
/// itself: `X-Prefork-Depth: <n>`, a decimal number, absent meaning 0.
///
/// [`Loopback::send`](crate::http::Loopback::send) sets it on every request it sends, to one more than
/// the depth of the request whose handler sends it. The server reads it on every request it
/// receives from this host (over a Unix socket, or over TCP from a loopback address or the
/// server's own address), and answers a request deeper than
/// [`max_depth`](crate::http::ServerBuilder::max_depth) (default 32) with 508 Loop Detected
/// ([`Error::LoopDetected`]) without running the handler; the `warn` line for those is written
/// at most once per 10 s, with the count of those not logged. From any other client the header
/// is removed before the request is handled (the handler sees depth 0), so a remote client
/// cannot have its requests refused with 508. A handler that calls its own service
/// with another HTTP client stops runaway recursion the same way by forwarding the header, plus
/// one:
///
/// ```
/// use prefork_pool::http::types::http;
/// use prefork_pool::http::{request_depth, DEPTH_HEADER};
///
/// let incoming = http::Request::get("/").header(DEPTH_HEADER, "4").body(()).unwrap();
/// let depth = request_depth(&incoming);
/// assert_eq!(depth, 4);
/// // ... ureq::get(url).set(DEPTH_HEADER, &(depth + 1).to_string()) ...
/// assert_eq!(depth + 1, 5);
/// ```
pub const DEPTH_HEADER: &str = "x-prefork-depth";

/// The depth a request carries in its [`DEPTH_HEADER`]: 0 when it has none (or one that is not a
/// number).
pub fn request_depth<B>(req: &http::Request<B>) -> u32 {
    req.headers()
        .get(DEPTH_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Whether a request's [`DEPTH_HEADER`] is honoured: only from this host, i.e. a Unix socket
/// peer (`tcp` is `None`), or a TCP peer on a loopback address or on our own local address
/// (`tcp` is `(peer, local)`). From anyone else the header is removed before the request is
/// handled, so a remote client cannot make its requests 508 (nor deepen a chain of calls).
pub(crate) fn depth_trusted(unix: bool, tcp: Option<(SocketAddr, SocketAddr)>) -> bool {
    if unix {
        return true;
    }
    match tcp {
        Some((peer, local)) => {
            let ip = peer.ip().to_canonical();
            ip.is_loopback() || ip == local.ip().to_canonical()
        }
        None => false,
    }
}

/// The one depth rule, for a request from a client and for one sent through the `Loopback`: a
/// request deeper than `max` is refused with [`Error::LoopDetected`] without running the handler.
pub(crate) fn check_depth(depth: u32, max: u32) -> Result<u32, Error> {
    if depth > max {
        return Err(Error::LoopDetected { depth, max });
    }
    Ok(depth)
}

/// How a dispatcher completes a request, exactly once ([`Done::finish`]): the request's [`Reply`]
/// and the way back to its connection, carried as they are (not in a boxed closure: one
/// allocation less per request).
pub(crate) struct Done {
    pub(super) handoff: Arc<Handoff>,
    pub(super) reply: Reply,
    /// When the request was handed on: the clock as the thread that read it last read it (its
    /// deadline counts from here).
    pub(super) at: Instant,
}

impl Done {
    /// Complete the request with `result` ([`finish`]): the unit tests' dispatchers.
    #[cfg(test)]
    pub(crate) fn finish(self, result: Result<HttpResponse, Error>) {
        finish(&self.handoff, self.reply, result)
    }

    /// [`finish`](Self::finish) with the completing thread's clock reading `now`, when it has
    /// one just taken (the answer's `Date` and duration); `None`: read the clock.
    #[inline]
    pub(crate) fn finish_at(self, result: Result<HttpResponse, Error>, now: Option<Instant>) {
        finish_at(&self.handoff, self.reply, result, now)
    }

    /// When the request was handed on (see [`Dispatch::dispatch`]).
    pub(crate) fn at(&self) -> Instant {
        self.at
    }

    /// The client, as the request's [`PeerAddr`](crate::http::PeerAddr) names it (for the log).
    pub(crate) fn peer(&self) -> &str {
        &self.reply.peer
    }

    /// How the server renders the answers it makes on its own (a pool error's).
    pub(crate) fn error_page(&self) -> &ErrorPage {
        &self.handoff.cfg.error_page
    }
}

/// Where complete requests go: the Pool (or, in unit tests, anything else).
pub(crate) trait Dispatch: Send + Sync + 'static {
    /// Run `req` (whose [`DEPTH_HEADER`] says `depth`, already checked) and call `done` with its
    /// answer.
    fn dispatch(&self, req: HttpRequest, depth: u32, done: Done);
    /// Workers waiting for a job now.
    fn idle_workers(&self) -> usize;
    /// Run the handler on the calling thread (a spare thread, for a self-call).
    fn call_here(&self, req: HttpRequest, depth: u32) -> Result<HttpResponse, Error>;
    /// The pool's name, for logs.
    fn name(&self) -> &str;
    /// Have the idle workers wait in `sleeper` (see [`Handoff::attach_sleeper`]); false when
    /// there are no workers to wait there.
    fn attach_sleeper(&self, _sleeper: Option<Arc<dyn crate::pool::Sleeper>>) -> bool {
        false
    }
    /// The reactor's periodic timer (every 100 ms while there are connections): the stuck check.
    fn tick(&self, _now: Instant) {}
    /// The workers running a request now, for the self-call warning.
    fn busy(&self, _now: Instant) -> Vec<BusyWorker> {
        Vec::new()
    }
    /// For readiness: why the workers are not all up, if they are not.
    fn not_ready(&self) -> Option<String> {
        None
    }
    /// For liveness: the stuck report, when every worker has been busy with no job completed
    /// for `after`.
    fn stuck(&self, _after: Duration, _now: Instant) -> Option<String> {
        None
    }
}

/// The connections' settings (limits, timeouts, keep-alive, the error page), checked by the
/// server's builder and read by every connection, the reactor and the lane.
#[derive(Debug, Clone)]
pub(crate) struct ConnConfig {
    pub limits: Limits,
    pub head_timeout: Duration,
    pub body_timeout: Duration,
    /// The slowest a request body may arrive, in bytes per second (0: no floor).
    pub min_body_rate: u64,
    pub keepalive_timeout: Duration,
    pub write_timeout: Duration,
    /// A request body larger than this is kept in a temporary file ([`RequestBody`](crate::http::RequestBody)).
    pub spool_above: u64,
    pub access_log: Option<AccessLogFormat>,
    /// Spare threads for requests this process (or a sibling worker process) sent itself over TCP
    /// or a Unix socket (0: off).
    pub max_spare: usize,
    /// The other processes whose requests count as self-calls (pre-fork sibling workers).
    pub siblings: Option<SiblingPids>,
    /// Deepest chain of calls a request may be in (its `X-Prefork-Depth`); deeper: 508.
    pub max_depth: u32,
    /// How the answers the server makes on its own are rendered (default: plain text).
    pub error_page: ErrorPage,
    /// Trusted proxies and the PROXY protocol.
    pub proxy: ProxySettings,
    /// The health routes, if asked for.
    pub health: Option<HealthRoutes>,
    /// Count the HTTP metrics here instead of in the server's own counters (process mode: a
    /// block of the memory shared with the master).
    pub shared_counters: Option<&'static HttpCounters>,
    /// Requests over TCP carry their `TcpEnds` (`ServerBuilder::tcp_ends`).
    pub tcp_ends: bool,
    /// TLS on the TCP connections (feature `tls`, `ServerBuilder::certfile`).
    #[cfg(feature = "tls")]
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

#[cfg(test)]
impl ConnConfig {
    /// The settings the engine's unit tests start from (5 s timeouts, no spare threads, no log).
    pub(crate) fn for_tests() -> ConnConfig {
        ConnConfig {
            limits: Limits::default(),
            head_timeout: Duration::from_secs(5),
            body_timeout: Duration::from_secs(5),
            min_body_rate: 0,
            keepalive_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(5),
            spool_above: 1 << 20,
            access_log: None,
            max_spare: 0,
            siblings: None,
            max_depth: 32,
            error_page: Default::default(),
            proxy: Default::default(),
            health: None,
            shared_counters: None,
            tcp_ends: false,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }
}

/// The answer to a connection's request, as it goes back to the connection: written by the
/// thread that completed it (or not entirely: `rest` is what is left to write). The engine's one
/// name for this message: `answer.rs` makes it (`write_answer`, called by the connection's
/// [`AnswerBack::finish`]), the lane's cell keeps it until the connection is free (its mailbox's
/// message), and `Conn::on_answer` acts on it.
#[derive(Debug)]
pub(crate) struct Answer {
    pub rest: Vec<u8>,
    /// When it was written: the connection's clock for what follows (its next deadline).
    pub at: Instant,
    pub keep_alive: bool,
    /// Writing failed: the connection is gone.
    pub failed: bool,
    /// The answer's header map, emptied, its allocation kept for the connection's next request
    /// head (`Conn::spare_headers`); `None` for a streamed answer or a large map.
    pub headers: Option<HeaderMap>,
}

/// Where a request's answer goes back to: its connection (the lane's cell, `answer.rs`).
pub(crate) trait AnswerBack: Send + Sync + std::fmt::Debug {
    /// Complete the request `reply` came with (its `back` taken: this) with `result`, on this
    /// thread: the answer serialised, logged, written to the socket as far as it takes it, and
    /// the connection goes on from here, on this thread if no other holds it. `now`: the
    /// completing thread's clock reading, if it has one just taken (the answer's `Date` and
    /// duration); `None`: read the clock.
    fn finish(
        self: Arc<Self>,
        handoff: &Arc<Handoff>,
        reply: Reply,
        result: Result<HttpResponse, Error>,
        now: Option<Instant>,
    );
}

/// Complete a request with `result` (an answer made here, a self-call's, a pool's): through its
/// connection's [`AnswerBack::finish`].
pub(crate) fn finish(handoff: &Arc<Handoff>, r: Reply, result: Result<HttpResponse, Error>) {
    finish_at(handoff, r, result, None)
}

/// [`finish`] with `now`, the completing thread's clock reading just taken, if it has one (a
/// worker reads the clock when its handler returns); `None`: read it when the answer is written.
#[inline]
pub(crate) fn finish_at(
    handoff: &Arc<Handoff>,
    mut r: Reply,
    result: Result<HttpResponse, Error>,
    now: Option<Instant>,
) {
    let back = r.back.take().expect("a request is answered once");
    back.finish(handoff, r, result, now)
}

/// What the answer needs to know about the request it answers; travels with the request to
/// whichever thread completes it.
#[derive(Debug)]
pub(crate) struct Reply {
    /// The connection, for the answer (taken by [`finish`] when the request is answered: then
    /// `None`).
    pub back: Option<Arc<dyn AnswerBack>>,
    pub link: Arc<Link>,
    pub peer: Arc<str>,
    /// What the connection had not written yet of its own when the request left (the rest of a
    /// `100 Continue`): written by the answering thread before its answer.
    pub prefix: Vec<u8>,
    pub head_only: bool,
    pub version: Version,
    pub keep_alive: bool,
    /// Boxed: the reply moves from the connection to the pool, the job and back, and without
    /// the request's fields inline (~140 bytes) each move is a few register copies, not a
    /// `memcpy` call.
    pub log: Option<Box<LogRequest>>,
    pub started: Instant,
    /// The request's method, as an index into [`METHODS`](crate::http::ops::metrics::METHODS).
    pub method: u8,
}

/// What the reactor, the connections (and the threads that drive them) and the threads that
/// answer share: the settings and the way to the pool and back.
pub(crate) struct Handoff {
    pub cfg: ConnConfig,
    pub(in crate::http) dispatcher: Box<dyn Dispatch>,
    /// Wakes the reactor's poll; `None` with no reactor (the engine's unit tests drive the
    /// connections and the lane themselves).
    waker: Option<Arc<Waker>>,
    /// The server is draining (graceful shutdown): answers say `Connection: close`.
    pub draining: AtomicBool,
    /// A graceful stop was asked for (readiness says 503), perhaps before `draining`.
    pub stopping: AtomicBool,
    /// The reactor is (about to be) blocked in `poll`: a wake-up is needed to reach it.
    pub sleeping: AtomicBool,
    /// The spare threads of self-calls (see `spare.rs`).
    pub spares: Spares,
    /// The self-call lookup thread, and the server's own descriptors (which it skips).
    pub lookup: OwnerLookup,
    /// The server's HTTP counters.
    pub metrics: CounterStore,
    /// Streamed answers: completed, cut.
    pub streams: StreamCounters,
    /// The reactor has stopped: a streamed answer ends at its next chunk.
    pub stopped: AtomicBool,
}

impl Handoff {
    pub(crate) fn new(
        cfg: ConnConfig,
        dispatcher: Box<dyn Dispatch>,
        waker: Option<Arc<Waker>>,
    ) -> Self {
        let lookup = OwnerLookup::new(cfg.max_spare > 0);
        let metrics = match cfg.shared_counters {
            Some(shared) => CounterStore::Shared(shared),
            None => CounterStore::Own(HttpCounters::default()),
        };
        Handoff {
            cfg,
            dispatcher,
            waker,
            draining: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            sleeping: AtomicBool::new(false),
            spares: Spares::default(),
            lookup,
            metrics,
            streams: StreamCounters::default(),
            stopped: AtomicBool::new(false),
        }
    }

    pub(crate) fn idle_workers(&self) -> usize {
        self.dispatcher.idle_workers()
    }

    /// The reactor's periodic timer, passed on to the dispatcher.
    pub(crate) fn tick(self: &Arc<Self>, now: Instant) {
        self.dispatcher.tick(now);
        self.expire_waiting_self_calls(now);
    }

    /// The answer to `req` if it is one of the health routes (answered here, without a worker).
    pub(crate) fn health_answer(&self, req: &HttpRequest) -> Option<HttpResponse> {
        let routes = self.cfg.health.as_ref()?;
        routes.answer(req.uri().path(), self.stopping.load(Ordering::SeqCst), self)
    }

    /// The server's HTTP metrics now.
    pub(crate) fn metrics(&self) -> ServerMetrics {
        self.metrics.snapshot()
    }

    /// Have the pool's idle workers wait on the connection lane (`None`: no more). False when the
    /// dispatcher has no workers to lend.
    pub(crate) fn attach_sleeper(&self, sleeper: Option<Arc<dyn crate::pool::Sleeper>>) -> bool {
        self.dispatcher.attach_sleeper(sleeper)
    }

    /// Wake the reactor if it sleeps.
    pub(crate) fn wake_reactor(&self) {
        if self.sleeping.swap(false, Ordering::SeqCst) {
            if let Some(waker) = &self.waker {
                let _ = waker.wake();
            }
        }
    }
}

impl HealthView for Handoff {
    fn not_ready(&self) -> Option<String> {
        self.dispatcher.not_ready()
    }
    fn stuck(&self, after: Duration, now: Instant) -> Option<String> {
        self.dispatcher.stuck(after, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_depth_is_read_from_the_header_and_checked_against_the_maximum() {
        let req = |v: &str| {
            http::Request::get("/")
                .header(DEPTH_HEADER, v)
                .body(())
                .unwrap()
        };
        assert_eq!(request_depth(&req("7")), 7);
        assert_eq!(request_depth(&req(" 3 ")), 3);
        assert_eq!(request_depth(&req("x")), 0);
        assert_eq!(request_depth(&http::Request::get("/").body(()).unwrap()), 0);
        assert_eq!(check_depth(32, 32).unwrap(), 32);
        let err = check_depth(33, 32).unwrap_err();
        assert!(matches!(err, Error::LoopDetected { depth: 33, max: 32 }));
        assert_eq!(err.http_status(), 508);
    }

    #[test]
    fn the_depth_is_honoured_only_from_this_host() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        let ours = a("10.1.2.3:8000");
        assert!(depth_trusted(true, None), "a Unix socket peer");
        assert!(depth_trusted(false, Some((a("127.0.0.1:5000"), ours))));
        assert!(depth_trusted(false, Some((a("127.9.9.9:5000"), ours))));
        assert!(depth_trusted(false, Some((a("[::1]:5000"), ours))));
        assert!(depth_trusted(
            false,
            Some((a("[::ffff:127.0.0.1]:5000"), ours))
        ));
        assert!(
            depth_trusted(false, Some((a("10.1.2.3:5000"), ours))),
            "our own address"
        );
        assert!(depth_trusted(
            false,
            Some((a("[::ffff:10.1.2.3]:5000"), a("[::ffff:10.1.2.3]:80")))
        ));
        assert!(!depth_trusted(false, Some((a("10.1.2.4:5000"), ours))));
        assert!(!depth_trusted(false, Some((a("203.0.113.7:5000"), ours))));
        assert!(!depth_trusted(
            false,
            Some((a("[2001:db8::1]:5000"), a("[2001:db8::2]:80")))
        ));
        assert!(!depth_trusted(false, None), "TCP without addresses");
    }
}
