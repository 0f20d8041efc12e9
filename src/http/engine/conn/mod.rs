//! One client connection: its buffers and its state machine (idle, reading a head, reading a body,
//! waiting for the handler, writing, closing, lingering). Every `Conn` lives in a cell of the
//! connection lane (`lane.rs`) and is driven by whichever thread holds that cell: the idle worker
//! that took its socket's event (or the reactor, when it takes the lane over), the thread that
//! completed its request when the answer comes back ([`Conn::on_answer`]), the reactor's timer
//! sweep and its drain. A complete request leaves through the hand-off (`Handoff::submit`,
//! `dispatch.rs`) on the thread that read it.
//!
//! Requests on one connection are handled one at a time: the next pipelined request is not parsed
//! until the current one is answered, so answers always go out in order.
//!
//! This file is the reading stage: the socket's bytes read, parsed and submitted. Two parts of
//! this module have files of their own: how a connection writes (the rest of an answer, then the
//! next request or the close: `write.rs`, where a request's path goes on from `answer.rs`), and
//! how it ends (its deadlines, the drain and the stop, a refused request, the lingering close:
//! `end.rs`). Its rules are tested in `tests.rs`.

use std::cell::RefCell;
use std::io::{self, Read};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use http::{HeaderMap, Method, Request};

use crate::http::engine::epoll;
use crate::http::engine::handoff::{
    depth_trusted, finish, request_depth, AnswerBack, Handoff, Reply, DEPTH_HEADER,
};
use crate::http::engine::incoming::Incoming;
use crate::http::engine::io::{Link, Stream, TcpAddrs};
use crate::http::engine::spool::RequestBody;
use crate::http::ops::forwarded::{believe, Forwarded};
use crate::http::ops::metrics::method_index;
use crate::http::self_call::calls::{unix_caller, Caller};
use crate::http::self_call::owner_lookup::CallerCell;
use crate::http::types::{ForwardedProto, PeerAddr, SocketPeer, TcpEnds};
use crate::http::wire::head_scan::HeadScanner;
use crate::http::wire::parse::{parse_shared, Framing, Head};
use crate::http::wire::proxy_protocol;

/// How long a closing connection keeps reading (and discarding) what the client still sends, so
/// that the client reads our last answer instead of a reset.
const LINGER: Duration = Duration::from_secs(2);
/// Read chunk size.
const READ_CHUNK: usize = 16 * 1024;

thread_local! {
    /// This thread's read buffer, allocated (and zeroed) once rather than per read.
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0u8; READ_CHUNK].into_boxed_slice());
}

/// What the lane should do with the connection after a call: keep it (armed for what it waits
/// for next), or close it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    Keep,
    Close,
}

/// What the slow path knows about a request's client.
enum Client {
    /// Known here: not the slow path, the answer kept from an earlier request on the connection,
    /// or a Unix socket's `SO_PEERCRED`. `Some`: a self-call.
    Known(Option<Caller>),
    /// A TCP client (its address, ours) the lookup thread must look up; its answer is kept in the
    /// connection's [`CallerCell`].
    LookUp((SocketAddr, SocketAddr), CallerCell),
}

/// During a drain (graceful shutdown, a worker process's reload or stop), how long a connection
/// with no request under way may wait for its next request, counted from when it became idle:
/// its accept (a new connection that has sent nothing yet) or its last answer (a kept-alive one
/// between two requests). So a connection idle for longer than this when the drain starts is
/// closed at its start, and one accepted or answered a moment ago (whose client may be writing
/// its next request now) has the rest of it. A request that comes in time is answered with
/// `Connection: close`; then (or when the grace is over) the connection gets a lingering close:
/// our side shut, the client's input read and dropped, so a request already on the wire meets an
/// end of file, never a reset.
pub(crate) const DRAIN_GRACE: Duration = Duration::from_secs(1);

/// Everything a connection needs from the thread that drives it during one call.
pub(crate) struct Env<'a> {
    pub handoff: &'a Arc<Handoff>,
    /// Where the answer to a request of this connection goes back to: its cell, weakly (made an
    /// owned reference only when a request is handed on, so a visit that hands nothing on takes
    /// none; the visit holds the cell, so it is there).
    pub back: &'a Weak<dyn AnswerBack>,
    pub draining: bool,
    /// The most requests a connection is kept alive for (process mode), else no limit.
    pub keepalive_requests: Option<u64>,
    pub now: Instant,
}

#[derive(Debug)]
enum State {
    /// A listener with the PROXY protocol: its header not read yet.
    Proxy,
    /// Between requests: nothing of the next request read yet.
    Idle,
    /// Part of a head read.
    Head,
    /// Head parsed, body being read.
    Body(Box<Incoming>),
    /// The request is with the pool; its [`Answer`](crate::http::engine::handoff::Answer) comes
    /// back ([`Conn::on_answer`]).
    InFlight,
    /// An answer is being written; then back to `Idle`.
    Writing,
    /// A last answer is being written; then `Lingering`.
    Closing,
    /// Our side is shut down; reading and discarding until the client closes or `LINGER` passes.
    Lingering,
}

/// One client connection.
#[derive(Debug)]
pub(crate) struct Conn {
    pub link: Arc<Link>,
    /// The socket's peer.
    peer: Arc<str>,
    /// The client as the connection says: the PROXY header's source if it named one, else the
    /// socket's peer (`client_ip` is `None` for a Unix socket).
    client: Arc<str>,
    client_ip: Option<IpAddr>,
    /// A PROXY header named the client.
    proxied: bool,
    /// What was read and not parsed yet. A complete head is split off it and frozen: the
    /// request's target and field values are slices of it (no copy), and the buffer is reused
    /// for the next request once they are gone (a handler that keeps one keeps the buffer it is
    /// in; the connection then reads into a new one).
    buf: BytesMut,
    scanner: HeadScanner,
    state: State,
    out: Vec<u8>,
    out_pos: usize,
    peer_eof: bool,
    /// Reading stopped while a request was in flight (the buffer was full): read again after.
    read_paused: bool,
    /// The request in flight said the client closes after it (`Connection: close`, or HTTP/1.0
    /// without keep-alive): once its answer is written the connection closes without lingering.
    client_closes: bool,
    /// For TCP: the client's address and ours.
    addrs: TcpAddrs,
    /// Whether the client is a socket of this process or of a sibling worker process (looked up
    /// once, on the slow path; set by the lookup thread before the request goes on).
    self_call: Option<CallerCell>,
    requests: u64,
    /// Since when no request is under way: the accept, or the last answer written (see
    /// [`DRAIN_GRACE`]).
    idle_since: Instant,
    /// When the current phase times out (head, body, idle, write, linger); `None` while in flight.
    pub deadline: Option<Instant>,
    /// The last answer's header map, emptied (`Answer::headers`): the next request's head is
    /// parsed into it, so a kept-alive request allocates no header map of its own.
    spare_headers: Option<HeaderMap>,
}

impl Conn {
    pub(crate) fn new(
        stream: Stream,
        peer: Arc<str>,
        addrs: TcpAddrs,
        handoff: &Handoff,
        now: Instant,
    ) -> Self {
        Conn {
            link: Arc::new(Link {
                stream,
                pending: AtomicBool::new(false),
            }),
            client: peer.clone(),
            client_ip: addrs.map(|(p, _)| p.ip().to_canonical()),
            proxied: false,
            peer,
            buf: BytesMut::new(),
            scanner: HeadScanner::default(),
            state: if handoff.cfg.proxy.proxy_protocol {
                State::Proxy
            } else {
                State::Idle
            },
            out: Vec::new(),
            out_pos: 0,
            peer_eof: false,
            read_paused: false,
            client_closes: false,
            addrs,
            self_call: None,
            requests: 0,
            idle_since: now,
            deadline: Some(now + handoff.cfg.head_timeout),
            spare_headers: None,
        }
    }

    /// What the connection waits for now: input, or room to write; `None` while its request is
    /// in flight (the thread that answers it decides).
    pub(crate) fn interest(&self) -> Option<u32> {
        if matches!(self.state, State::InFlight) {
            None
        } else if self.out_pos < self.out.len() || self.link.stream.wants_write() {
            Some(epoll::OUT)
        } else {
            Some(epoll::IN)
        }
    }

    /// Only lingering: nothing left to answer.
    pub(crate) fn is_lingering(&self) -> bool {
        matches!(self.state, State::Lingering)
    }

    /// The socket is ready.
    ///
    /// `read_closed`: the poll said the client's side is shut, so reading goes on to the EOF
    /// (otherwise a short read is taken to mean the socket is drained, saving a read that would
    /// only say `WouldBlock`).
    pub(crate) fn on_ready(
        &mut self,
        readable: bool,
        read_closed: bool,
        writable: bool,
        env: &mut Env<'_>,
    ) -> Next {
        if writable
            && (self.out_pos < self.out.len() || self.link.stream.wants_write())
            && self.flush(env) == Next::Close
        {
            return Next::Close;
        }
        if readable {
            return self.read_and_advance(!read_closed, env);
        }
        Next::Keep
    }

    fn read_cap(&self, env: &Env<'_>) -> usize {
        env.handoff.cfg.limits.head_bytes + READ_CHUNK
    }

    fn read_and_advance(&mut self, short_read_drains: bool, env: &mut Env<'_>) -> Next {
        loop {
            if self.peer_eof {
                break;
            }
            let busy = matches!(
                self.state,
                State::InFlight | State::Writing | State::Closing
            );
            if busy && self.buf.len() >= self.read_cap(env) {
                // Pipelined input beyond what one head may take: leave it in the socket until the
                // answer is out (we read again then).
                self.read_paused = true;
                break;
            }
            let lingering = matches!(self.state, State::Lingering);
            // Read into the thread's scratch buffer and append to `buf`: the borrow ends before
            // `advance`, which may come back here (a refusal's lingering close).
            let read = SCRATCH.with(|s| {
                let mut s = s.borrow_mut();
                let r = (&self.link.stream).read(&mut s[..]);
                if let (Ok(n), false) = (&r, lingering) {
                    self.buf.extend_from_slice(&s[..*n]);
                }
                r
            });
            match read {
                Ok(0) => {
                    self.peer_eof = true;
                    self.link.pending.store(true, Ordering::SeqCst);
                }
                Ok(n) => {
                    env.handoff.metrics.read(n);
                    if !lingering {
                        if busy {
                            self.link.pending.store(true, Ordering::SeqCst);
                        } else if self.advance(env) == Next::Close {
                            return Next::Close;
                        }
                    }
                    if short_read_drains && n < READ_CHUNK {
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Next::Close,
            }
        }
        self.after_input(env)
    }

    /// Parse what is buffered; close when the client has gone and nothing is left to answer.
    fn after_input(&mut self, env: &mut Env<'_>) -> Next {
        if self.advance(env) == Next::Close {
            return Next::Close;
        }
        if self.peer_eof {
            match self.state {
                State::Proxy | State::Idle | State::Head | State::Body(_) | State::Lingering => {
                    return Next::Close
                }
                State::InFlight | State::Writing | State::Closing => {}
            }
        }
        Next::Keep
    }

    /// Parse what is buffered, as far as it goes.
    fn advance(&mut self, env: &mut Env<'_>) -> Next {
        loop {
            match &mut self.state {
                State::Proxy => match proxy_protocol::parse(&self.buf) {
                    Ok(None) => return Next::Keep,
                    Ok(Some((len, client))) => {
                        self.buf.advance(len);
                        if let Some(client) = client {
                            let ip = client.ip().to_canonical();
                            self.client = Arc::from(ip.to_string());
                            self.client_ip = Some(ip);
                            self.proxied = true;
                        }
                        // The head timeout still runs from the accept.
                        self.state = State::Idle;
                    }
                    Err(e) => {
                        log::debug!(target: "prefork_pool::http", "{}: {}; closed", self.peer, e.0);
                        return Next::Close;
                    }
                },
                State::Idle | State::Head => {
                    if self.buf.is_empty() {
                        return Next::Keep;
                    }
                    let limits = env.handoff.cfg.limits;
                    match self.scanner.scan(&self.buf, &limits) {
                        Err(e) => return self.fail(e, env),
                        Ok(None) => {
                            if matches!(self.state, State::Idle) && self.scanner.started() {
                                self.state = State::Head;
                                self.deadline = Some(env.now + env.handoff.cfg.head_timeout);
                            }
                            return Next::Keep;
                        }
                        Ok(Some((a, b))) => {
                            let mut raw = self.buf.split_to(b);
                            raw.advance(a);
                            let parts = self.scanner.parts();
                            let head = match parse_shared(
                                raw.freeze(),
                                parts,
                                &limits,
                                self.spare_headers.take().unwrap_or_default(),
                            ) {
                                Ok(h) => h,
                                Err(e) => return self.fail(e, env),
                            };
                            self.scanner.reset();
                            if head.framing == Framing::None {
                                self.dispatch(head, Vec::new(), None, env);
                                return Next::Keep;
                            }
                            if head.expect_continue && self.buf.is_empty() {
                                self.out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
                                env.handoff.metrics.wrote(25);
                                if self.flush(env) == Next::Close {
                                    return Next::Close;
                                }
                            }
                            let incoming = Incoming::new(head, env.now);
                            self.deadline = Some(incoming.deadline(&env.handoff.cfg));
                            self.state = State::Body(incoming);
                        }
                    }
                }
                State::Body(incoming) => {
                    let cfg = &env.handoff.cfg;
                    match incoming.take(&mut self.buf, cfg, env.now) {
                        Err(e) => return self.fail(e, env),
                        Ok(false) => {
                            self.deadline = Some(incoming.deadline(cfg));
                            return Next::Keep;
                        }
                        Ok(true) => {}
                    }
                    let State::Body(incoming) = std::mem::replace(&mut self.state, State::Idle)
                    else {
                        unreachable!("state checked above")
                    };
                    match incoming.finish() {
                        Ok((head, body, spooled)) => self.dispatch(head, body, spooled, env),
                        Err(e) => return self.fail(e, env),
                    }
                    return Next::Keep;
                }
                _ => return Next::Keep,
            }
        }
    }

    fn dispatch(
        &mut self,
        head: Head,
        body: Vec<u8>,
        spooled: Option<RequestBody>,
        env: &mut Env<'_>,
    ) {
        let handoff = env.handoff;
        let log = handoff
            .cfg
            .access_log
            .as_ref()
            .map(|f| Box::new(f.capture(&head.method, &head.uri, head.version, &head.headers)));
        // What a trusted proxy says about the client: for the handler and the log only.
        let fwd = if head.forwarding {
            believe(&handoff.cfg.proxy, self.client_ip, &head.headers)
        } else {
            Forwarded::default()
        };
        let depth_header = head.depth;
        let client = match fwd.client {
            Some(ip) => Arc::from(ip.to_string()),
            None => self.client.clone(),
        };
        // What is left to write of a `100 Continue` goes with the request: the thread that
        // answers writes it first, so only one thread writes to the socket at a time.
        let prefix = if self.out_pos < self.out.len() {
            let rest = self.out.split_off(self.out_pos);
            self.out.clear();
            self.out_pos = 0;
            rest
        } else {
            Vec::new()
        };
        self.link
            .pending
            .store(!self.buf.is_empty() || self.peer_eof, Ordering::Release);
        let reply = Reply {
            back: env.back.upgrade(),
            link: self.link.clone(),
            peer: client.clone(),
            prefix,
            head_only: head.method == Method::HEAD,
            version: head.version,
            // Process mode caps the requests per connection, so that a client reconnects now and
            // then, to whichever worker process the accept balance picks.
            keep_alive: head.keep_alive
                && env
                    .keepalive_requests
                    .map_or(true, |cap| self.requests + 1 < cap),
            log,
            started: env.now,
            method: method_index(&head.method),
        };
        handoff.metrics.started();
        self.client_closes = !head.keep_alive;
        self.state = State::InFlight;
        self.deadline = None;
        self.requests += 1;
        let mut req = Request::new(body);
        *req.method_mut() = head.method;
        *req.version_mut() = head.version;
        // The defaults these replace own no memory (`Uri::default` is a static "/",
        // `HeaderMap::new` does not allocate: both documented): not dropped, a drop of each
        // per request saved.
        std::mem::forget(std::mem::replace(req.uri_mut(), head.uri));
        std::mem::forget(std::mem::replace(req.headers_mut(), head.headers));
        req.extensions_mut().insert(PeerAddr(client));
        req.extensions_mut().insert(SocketPeer(self.peer.clone()));
        if let (true, Some((peer, local))) = (handoff.cfg.tcp_ends, self.addrs) {
            req.extensions_mut().insert(TcpEnds { peer, local });
        }
        if let Some(proto) = fwd.proto {
            req.extensions_mut()
                .insert(ForwardedProto(Arc::from(proto)));
        } else {
            // TLS terminated here: the client used https.
            #[cfg(feature = "tls")]
            if matches!(self.link.stream, Stream::Tls(_)) {
                req.extensions_mut()
                    .insert(ForwardedProto(Arc::from("https")));
            }
        }
        if let Some(spooled) = spooled {
            req.extensions_mut().insert(spooled);
        }
        // The depth is honoured from this host's sockets only; and when a proxy names the client,
        // only if that client is on this host too (a remote client behind a local proxy cannot
        // have its requests refused with 508).
        let unix = matches!(self.link.stream, Stream::Unix(_));
        let named = fwd.client.or(self.client_ip.filter(|_| self.proxied));
        let local = self.addrs.map(|(_, l)| l.ip().to_canonical());
        let named_here = named.map_or(true, |ip| ip.is_loopback() || Some(ip) == local);
        // The header is looked for only when the parse saw one.
        let depth = if !depth_header {
            0
        } else if !depth_trusted(unix, self.addrs) || !named_here {
            req.headers_mut().remove(DEPTH_HEADER);
            0
        } else {
            request_depth(&req)
        };
        if let Some(resp) = handoff.health_answer(&req) {
            return finish(handoff, reply, Ok(resp));
        }
        match self.self_caller(handoff) {
            Client::Known(caller) => handoff.submit(req, depth, reply, caller),
            Client::LookUp(addrs, cell) => {
                handoff.submit_after_lookup(req, depth, reply, addrs, cell)
            }
        }
    }

    /// Slow path only: the pool has no idle worker and the client is on this host (a loopback
    /// address or our own address, or a Unix socket). Always the socket's peer, never the client
    /// a proxy names: a request a local proxy forwards is looked up as the proxy's socket, which
    /// no process of ours owns, so it is not a self-call. Then find out (once per connection) whether
    /// the client is a socket of this process, or of a sibling worker process.
    fn self_caller(&mut self, handoff: &Handoff) -> Client {
        if handoff.cfg.max_spare == 0 {
            return Client::Known(None);
        }
        let on_this_host = match (&self.link.stream, self.addrs) {
            (Stream::Unix(_), _) => true,
            // TCP, with or without TLS.
            (_, Some((peer, local))) => peer.ip().is_loopback() || peer.ip() == local.ip(),
            (_, None) => false,
        };
        if !on_this_host || handoff.idle_workers() > 0 {
            return Client::Known(None);
        }
        let cell = self.self_call.get_or_insert_with(CallerCell::default);
        if let Some(known) = cell.get() {
            return Client::Known(*known);
        }
        match self.addrs {
            Some(addrs) => Client::LookUp(addrs, cell.clone()),
            None => {
                handoff.lookup.count();
                let caller = unix_caller(self.link.stream.raw_fd(), handoff.cfg.siblings.as_ref());
                let _ = cell.set(caller);
                Client::Known(caller)
            }
        }
    }
}

mod write;

mod end;

#[cfg(test)]
pub(in crate::http::engine) mod tests;
