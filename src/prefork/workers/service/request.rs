//! One request in the tower mode: the user's service wrapped in the supervisor's glue, the same
//! operator features as the crate's HTTP server, from the same code: the size limits (414, 431,
//! 413 answered here), the health routes before the service, the believed client behind a
//! trusted proxy, the deadline (504) tracked in the heartbeat, the shared metrics, the access log;
//! the body handed to the service counted as it streams in ([`ServiceBody`]): over the limit, 413.

use std::convert::Infallible;
use std::future::Future;
use std::marker::PhantomData;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use http_body_util::{Either, Full};
use hyper::body::{Body, Bytes, Incoming};
use hyper::header::{HeaderValue, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode, Version};
use tokio::sync::{watch, Notify};

use super::call::Call;
use super::config::Checked;
use super::line::RequestLine;
use super::overdue::{Fence, Reply, Watch, WatchGuard, Watched, TIMEOUT_TEXT};
use super::{AnswerBody, AppService, BoxError, ServiceBody};
use crate::http::ops::access_log::{write_line, LogRequest};
use crate::http::ops::forwarded::{believe, ProxySettings};
use crate::http::ops::health::HealthView;
use crate::http::ops::metrics::{method_index, HttpCounters};
use crate::http::AcceptPolicy;
use crate::http::{PeerAddr, SocketPeer};
use crate::prefork::workers::balance::SlotGate;
use crate::prefork::workers::heartbeat::{Counted, Heartbeat};

/// The response body the tower mode sends: the app's, or the server's own answer (504 at the
/// deadline, 500 when the service failed, a refusal, a health route).
pub(super) type Answer<B> = Response<Either<B, Full<Bytes>>>;

/// What every connection task of a worker process shares.
pub(super) struct Shared {
    pub heartbeat: Heartbeat,
    pub cfg: Checked,
    pub proxy: ProxySettings,
    /// This process's block of the supervisor's shared HTTP counters.
    pub counters: &'static HttpCounters,
    /// The load-aware accept gate shared with the sibling processes (see `balance.rs`).
    pub gate: Option<SlotGate>,
    /// `true` once the worker drains (to wait on).
    pub stop: watch::Receiver<bool>,
    /// `true` once the worker drains, set before `stop` (to look at: a watch's borrow is a read
    /// lock that every runtime thread shares).
    pub draining: AtomicBool,
    /// Connections open now, upgraded ones (WebSockets) included.
    pub conns: AtomicUsize,
    /// Woken when `conns` drops to 0.
    pub idle: Notify,
    /// When a request was last answered, in milliseconds since `born` (liveness).
    pub last_answer_ms: AtomicU64,
    /// When the runtime's tick task last ran, in milliseconds since `born` (the lifeline).
    pub tick_ms: AtomicU64,
    pub born: Instant,
    /// The HTTP/1.1 requests under way, for the lifeline's 504 (see `overdue.rs`).
    pub watch: Arc<Watch>,
    /// `true` once the worker drained (the lifeline ends).
    pub done: AtomicBool,
    /// TLS (feature `tls`): the certificate the master held when it forked this process.
    #[cfg(feature = "tls")]
    pub tls: Option<tokio_rustls::TlsAcceptor>,
}

impl Shared {
    pub(super) fn stopping(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }
}

impl HealthView for Shared {
    fn not_ready(&self) -> Option<String> {
        // The worker serves only once its runtime and listeners are up.
        None
    }

    fn stuck(&self, after: Duration, now: Instant) -> Option<String> {
        let running = self.counters.snapshot().in_flight;
        let last = self.born + Duration::from_millis(self.last_answer_ms.load(Ordering::Relaxed));
        let quiet = now.saturating_duration_since(last);
        (running > 0 && quiet >= after).then(|| {
            format!(
                "stuck: {running} request(s) running and none answered for {:.1} s (live_after {:?})",
                quiet.as_secs_f64(),
                after
            )
        })
    }
}

/// One connection's requests under way, its last answer (for the idle and drain limits) and its
/// peer.
pub(super) struct ConnState {
    pub in_flight: AtomicUsize,
    /// Requests answered on it (before the first, an idle connection waits for a head: the head
    /// timeout applies, not the keep-alive time).
    pub answered: AtomicU64,
    pub last_answer: Mutex<Instant>,
    /// Whether it speaks HTTP/2 (seen on its first request).
    pub h2: AtomicBool,
    /// Woken when a request of it is answered (the idle limit starts).
    pub answer: Notify,
    /// The socket's peer (`None`: a Unix socket).
    pub peer: Option<SocketAddr>,
    /// The socket's own peer (`peer` is a PROXY header's source when there is one).
    pub socket_addr: Option<SocketAddr>,
    /// The socket's peer as the [`SocketPeer`] extension shows it.
    pub socket_peer: Arc<str>,
    /// Who may write on the socket: the runtime, or the lifeline's 504 (see `overdue.rs`).
    pub fence: Arc<Fence>,
}

/// Counts a request of a connection as under way while it lives.
struct InFlight {
    conn: Arc<ConnState>,
    /// When it was answered (set by [`answered`](Self::answered); else the drop's time: its
    /// future was dropped before the answer, the connection went away).
    at: Option<Instant>,
}

impl InFlight {
    fn new(conn: &Arc<ConnState>) -> InFlight {
        conn.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight {
            conn: conn.clone(),
            at: None,
        }
    }

    /// The request is answered at `now` (the clock already read for its metrics).
    fn answered(mut self, now: Instant) {
        self.at = Some(now);
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let at = self.at.unwrap_or_else(Instant::now);
        *self
            .conn
            .last_answer
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = at;
        self.conn.answered.fetch_add(1, Ordering::Relaxed);
        self.conn.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.conn.answer.notify_one();
    }
}

/// The user's service with the supervisor's glue, as a hyper service.
pub(super) struct Tracked<S> {
    pub inner: S,
    pub shared: &'static Shared,
    pub conn: Arc<ConnState>,
}

fn own_answer<B>(status: StatusCode, text: String) -> Answer<B> {
    let mut resp = Response::new(Either::Right(Full::new(Bytes::from(text))));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    resp
}

/// The server's refusal of a request that exceeds a limit hyper does not check: the request line
/// (414), a header field line (431), a declared body (413).
fn refusal(req: &Request<Incoming>, cfg: &Checked) -> Option<(StatusCode, String)> {
    let l = &cfg.limits;
    let target = req.uri().path_and_query().map_or(1, |p| p.as_str().len());
    // `METHOD SP target SP HTTP/1.1`
    let line = req.method().as_str().len() + 1 + target + 9;
    if line > l.request_line {
        return Some((
            StatusCode::URI_TOO_LONG,
            format!(
                "request line too long (the limit is {} bytes)\n",
                l.request_line
            ),
        ));
    }
    for (name, value) in req.headers() {
        if name.as_str().len() + 2 + value.len() > l.field_size {
            return Some((
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                format!(
                    "header field too long (the limit is {} bytes)\n",
                    l.field_size
                ),
            ));
        }
    }
    // (A body that is over at once declared none, or 0: no header to look up.)
    if req.body().is_end_stream() {
        return None;
    }
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > l.body_bytes) {
        return Some((StatusCode::PAYLOAD_TOO_LARGE, body_too_large(l.body_bytes)));
    }
    None
}

/// The 413's reason, the same for a declared length and a counted one.
fn body_too_large(limit: u64) -> String {
    format!("request body too large (the limit is {limit} bytes)\n")
}

impl<S> Tracked<S> {
    /// The believed client (a trusted proxy's word, else the socket's peer) into the request's
    /// extensions, as the HTTP server puts them; its text for the access log.
    fn client(&self, req: &mut Request<Incoming>) -> Arc<str> {
        let peer_ip = self.conn.peer.map(|a| a.ip().to_canonical());
        let named = believe(&self.shared.proxy, peer_ip, req.headers()).client;
        let client = match (named, self.conn.peer) {
            (Some(ip), _) => SocketAddr::new(ip, 0),
            (None, Some(peer)) => SocketAddr::new(peer.ip().to_canonical(), peer.port()),
            (None, None) => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
        };
        // As the HTTP server's `PeerAddr`: the client a trusted proxy names, else the peer (the
        // PROXY header's source, else the socket's), else `unix`.
        let text: Arc<str> = match (named, self.conn.peer) {
            (Some(ip), _) => ip.to_string().into(),
            (None, Some(peer)) if Some(peer) == self.conn.socket_addr => {
                self.conn.socket_peer.clone()
            }
            (None, Some(peer)) => peer.ip().to_canonical().to_string().into(),
            (None, None) => self.conn.socket_peer.clone(),
        };
        let ext = req.extensions_mut();
        ext.insert(PeerAddr(text.clone()));
        ext.insert(SocketPeer(self.conn.socket_peer.clone()));
        if let Some(make) = &self.shared.cfg.connect_info {
            make(client, ext);
        }
        text
    }
}

impl<S, B> hyper::service::Service<Request<Incoming>> for Tracked<S>
where
    // `Response = Response<B>` names `B` for the impl (a bound through `AppService` does not).
    S: AppService<B> + tower_service::Service<Request<ServiceBody>, Response = Response<B>>,
    B: AnswerBody,
{
    type Response = Answer<B>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Answer<B>, Infallible>> + Send>>;

    fn call(&self, mut req: Request<Incoming>) -> Self::Future {
        let started = Instant::now();
        let shared = self.shared;
        let cfg = &shared.cfg;
        let in_flight = InFlight::new(&self.conn);
        shared.counters.started();
        let method = method_index(req.method());
        let log = cfg
            .access_log
            .as_ref()
            // (Boxed: the request's future carries it, moved at each step, for every request.)
            .map(|f| Box::new(f.capture(req.method(), req.uri(), req.version(), req.headers())));
        let peer = self.client(&mut req);
        let own = refusal(&req, cfg);
        let close = own.is_some();
        // A health answer and its `Connection` agree: readiness 200 never comes with the close
        // of a stop that began after it was decided (the client would find the next request's
        // connection closed with no 503 seen).
        let mut health_stopping = None;
        let own = own.or_else(|| {
            let routes = cfg.health.as_ref()?;
            let stopping = shared.stopping();
            let resp = routes.answer(req.uri().path(), stopping, &*shared)?;
            health_stopping = Some(stopping);
            let status = resp.status();
            Some((status, String::from_utf8_lossy(resp.body()).into_owned()))
        });
        let conn = self.conn.clone();
        let h1 = req.version() < Version::HTTP_2;
        if !h1 {
            conn.h2.store(true, Ordering::Relaxed);
        }
        let budget = cfg
            .deadline_for
            .as_ref()
            .and_then(|f| f(req.method(), req.uri()))
            .unwrap_or(cfg.deadline);
        let deadline = started + budget;
        let mut log = log;
        // The lifeline publishes the request in the heartbeat once past its deadline, and,
        // HTTP/1.1, answers 504 if the handler blocks its runtime thread past the deadline (see
        // `overdue.rs`). (Not a request the server answers itself.)
        let guard = own.is_none().then(|| {
            let reply = h1.then(|| Reply {
                fence: conn.fence.clone(),
                since: conn.fence.written(),
                log: log.take(),
                peer: peer.clone(),
            });
            let watched = Watched {
                deadline,
                budget,
                line: RequestLine::of(&req),
                method,
                started,
                reply,
            };
            WatchGuard::new(&shared.watch, watched)
        });
        // An empty body never crosses the limit: no flag (and no allocation) for it.
        let over = (!req.body().is_end_stream()).then(|| Arc::new(AtomicBool::new(false)));
        let limit = cfg.limits.body_bytes;
        let req = req.map(|body| ServiceBody::new(body, limit, over.clone()));
        Box::pin(Answering {
            // The service's answer, asked for only when the server does not answer itself.
            called: Call::new(self.inner.clone(), req),
            timer: None,
            running: None,
            own,
            guard,
            after: After {
                shared,
                conn,
                in_flight: Some(in_flight),
                method,
                started,
                deadline,
                budget,
                h1,
                over,
                limit,
                close,
                health_stopping,
                log,
                peer,
            },
            _body: PhantomData,
        })
    }
}

pin_project_lite::pin_project! {
    /// A request's answer once `call` has looked at it: the server's own (`own`), or the
    /// service's (`called`) within its deadline (504 past it, 500 when it failed), then counted,
    /// logged and given its `Connection`. Written out (not an `async` block) so that `called`
    /// is pinned where it is, in the one allocation hyper keeps per request, with no second
    /// place kept for it: the future stays small (within glibc's per-thread cache) and is
    /// copied once.
    struct Answering<S, B>
    where
        S: tower_service::Service<Request<ServiceBody>>,
    {
        #[pin]
        called: Call<S, Request<ServiceBody>>,
        // The deadline's timer, only for an answer that is not ready at its first poll: most
        // are, and a timer costs a registration in the runtime's wheel and its removal. (Boxed:
        // not carried in every request's future.)
        timer: Option<Pin<Box<tokio::time::Sleep>>>,
        // Counted as running (the siblings' accept gates read the count) from the first poll
        // until the service answers, then as done (`max_requests`).
        running: Option<Counted>,
        own: Option<(StatusCode, String)>,
        // The lifeline's view of the request (`None`: the server answers it itself).
        guard: Option<WatchGuard<'static>>,
        after: After,
        _body: PhantomData<fn() -> B>,
    }
}

/// What a request's answer needs once it is made (see [`After::finish`]).
struct After {
    shared: &'static Shared,
    conn: Arc<ConnState>,
    /// `None` once answered.
    in_flight: Option<InFlight>,
    /// The request's method, as the metrics count it.
    method: u8,
    started: Instant,
    deadline: Instant,
    budget: Duration,
    h1: bool,
    over: Option<Arc<AtomicBool>>,
    limit: u64,
    /// The server refused the request (`Connection: close`).
    close: bool,
    /// A health answer's view of the stop.
    health_stopping: Option<bool>,
    log: Option<Box<LogRequest>>,
    peer: Arc<str>,
}

impl<S, B> Future for Answering<S, B>
where
    S: AppService<B> + tower_service::Service<Request<ServiceBody>, Response = Response<B>>,
    B: AnswerBody,
{
    type Output = Result<Answer<B>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let me = self.project();
        let after = me.after;
        let (resp, by_server) = match me.own.take() {
            Some((status, text)) => (own_answer(status, text), true),
            None => {
                let shared = after.shared;
                // The master sees the request through the lifeline's watch once it runs past
                // its deadline: one still running `request_grace` after it (a runtime thread
                // blocked, so the timer below cannot fire) gets the whole process replaced.
                me.running
                    .get_or_insert_with(|| shared.heartbeat.count_running());
                let answer = match me.called.poll(cx) {
                    Poll::Ready(out) => Some(out),
                    Poll::Pending => {
                        let deadline = after.deadline;
                        let timer = me.timer.get_or_insert_with(|| {
                            Box::pin(tokio::time::sleep_until(deadline.into()))
                        });
                        // (Out of the task's budget, as `tokio::time::timeout`'s timer is once
                        // the service used it up: the deadline holds whatever the service does.)
                        let mut fired = tokio::task::unconstrained(timer.as_mut());
                        match Pin::new(&mut fired).poll(cx) {
                            Poll::Ready(()) => None,
                            Poll::Pending => return Poll::Pending,
                        }
                    }
                };
                *me.running = None;
                *me.timer = None;
                let guard = me.guard.take();
                let (resp, by_server) = after.own_or(answer, guard.as_ref());
                match guard.and_then(WatchGuard::finish) {
                    Some(back) => after.log = after.log.take().or(back),
                    // The lifeline answered 504 (and counted and logged it): this answer is
                    // never written (the connection is fenced off).
                    None => {
                        after.in_flight.take();
                        return Poll::Ready(Ok(resp));
                    }
                }
                (resp, by_server)
            }
        };
        Poll::Ready(Ok(after.finish(resp, by_server)))
    }
}

impl After {
    /// The service's answer (`None`: not within its deadline), or the server's own (504 at the
    /// deadline, 500 when it failed; `true` then).
    fn own_or<B>(
        &self,
        answer: Option<Result<Response<B>, BoxError>>,
        watched: Option<&WatchGuard<'_>>,
    ) -> (Answer<B>, bool) {
        let line = || {
            let line = watched.and_then(WatchGuard::line);
            line.map(|l| l.to_string()).unwrap_or_default()
        };
        match answer {
            Some(Ok(resp)) => (resp.map(Either::Left), false),
            Some(Err(e)) => {
                log::error!("{}: the service failed: {e}", line());
                let text = "internal server error\n".to_string();
                (own_answer(StatusCode::INTERNAL_SERVER_ERROR, text), true)
            }
            None => {
                let budget = self.budget;
                log::warn!(
                    "{}: no answer within its deadline of {budget:?}; answered 504",
                    line()
                );
                let text = TIMEOUT_TEXT.to_string();
                (own_answer(StatusCode::GATEWAY_TIMEOUT, text), true)
            }
        }
    }

    /// The answer `resp` (`by_server`: the server's own) as it goes out: the server's 413 for a
    /// body that went over the limit, its `Connection`, counted in the metrics, logged.
    fn finish<B: AnswerBody>(&mut self, mut resp: Answer<B>, mut by_server: bool) -> Answer<B> {
        let shared = self.shared;
        let mut close = self.close;
        if self
            .over
            .as_ref()
            .is_some_and(|o| o.load(Ordering::Acquire))
        {
            // A body without a declared length (chunked, HTTP/2) went over the limit while the
            // service read it: the server's 413 whatever the service made of the error, and
            // the connection closed (the rest of the body is not read).
            let text = body_too_large(self.limit);
            resp = own_answer(StatusCode::PAYLOAD_TOO_LARGE, text);
            (by_server, close) = (true, true);
        }
        let cap = shared.gate.as_ref().and_then(|g| g.keepalive_requests());
        // The gate's cap: clients reconnect now and then, to the process the gate picks.
        let answered = self.conn.answered.load(Ordering::Relaxed);
        let capped = cap.is_some_and(|cap| answered + 1 >= cap);
        // (HTTP/2 has no `Connection`: a stop sends GOAWAY on the connection instead.)
        let stopping = self.health_stopping.unwrap_or_else(|| shared.stopping());
        if self.h1 && (close || capped || stopping) {
            // hyper closes the connection once this answer is written.
            resp.headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("close"));
        }
        let status = resp.status().as_u16();
        let bytes = resp.body().size_hint().exact().unwrap_or(0) as usize;
        let now = Instant::now();
        let took = now.saturating_duration_since(self.started);
        if by_server {
            shared.counters.own_answer(status);
        }
        shared.counters.answered(self.method, status, bytes, took);
        let since = now.saturating_duration_since(shared.born).as_millis() as u64;
        // Written only when it moves (once a millisecond at most): the line stays shared by
        // the runtime's threads, which read the drain flag beside it at every request.
        if shared.last_answer_ms.load(Ordering::Relaxed) != since {
            shared.last_answer_ms.store(since, Ordering::Relaxed);
        }
        if let (Some(fmt), Some(log)) = (shared.cfg.access_log.as_ref(), self.log.as_ref()) {
            write_line(fmt, &self.peer, log, status, resp.headers(), bytes, took);
        }
        if let Some(in_flight) = self.in_flight.take() {
            in_flight.answered(now);
        }
        resp
    }
}
