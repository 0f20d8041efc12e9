//! One client connection: its buffers and its state machine (idle, reading a head, reading a body,
//! waiting for the handler, writing, closing, lingering). The reactor owns every `Conn` and calls
//! it when its socket is ready, when its answer comes back from the pool, and when a timer passes.
//!
//! Requests on one connection are handled one at a time: the next pipelined request is not parsed
//! until the current one is answered, so answers always go out in order.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Method, Request, Response, Version};
use mio::event::Source;
use mio::{Interest, Registry, Token};

use super::access_log::LogRequest;
use super::parse::{parse_head, BodyDecoder, Framing, Head, HeadScanner, HttpError};
use super::reactor::Shared;
use super::response::{error_response, write_response, DateCache, WriteOpts};
use crate::Error;

/// How long a closing connection keeps reading (and discarding) what the client still sends, so
/// that the client reads our last answer instead of a reset.
const LINGER: Duration = Duration::from_secs(2);
/// Read chunk size.
const READ_CHUNK: usize = 16 * 1024;

/// A connected socket: TCP or Unix.
#[derive(Debug)]
pub(crate) enum Stream {
    Tcp(mio::net::TcpStream),
    #[cfg(unix)]
    Unix(mio::net::UnixStream),
}

impl Stream {
    fn shutdown_write(&self) {
        let _ = match self {
            Stream::Tcp(s) => s.shutdown(Shutdown::Write),
            #[cfg(unix)]
            Stream::Unix(s) => s.shutdown(Shutdown::Write),
        };
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            #[cfg(unix)]
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            #[cfg(unix)]
            Stream::Unix(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Source for Stream {
    fn register(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.register(r, t, i),
            #[cfg(unix)]
            Stream::Unix(s) => s.register(r, t, i),
        }
    }
    fn reregister(&mut self, r: &Registry, t: Token, i: Interest) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.reregister(r, t, i),
            #[cfg(unix)]
            Stream::Unix(s) => s.reregister(r, t, i),
        }
    }
    fn deregister(&mut self, r: &Registry) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.deregister(r),
            #[cfg(unix)]
            Stream::Unix(s) => s.deregister(r),
        }
    }
}

/// What the reactor should do with the connection after a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    Keep,
    Close,
}

/// Everything a connection needs from the reactor during one call.
pub(crate) struct Env<'a> {
    pub shared: &'a Arc<Shared>,
    pub date: &'a mut DateCache,
    pub draining: bool,
    pub now: Instant,
}

#[derive(Debug)]
enum State {
    /// Between requests: nothing of the next request read yet.
    Idle,
    /// Part of a head read.
    Head,
    /// Head parsed, body being read.
    Body {
        head: Head,
        decoder: BodyDecoder,
        body: Vec<u8>,
    },
    /// The request is with the pool.
    InFlight(InFlight),
    /// An answer is being written; then back to `Idle`.
    Writing,
    /// A last answer is being written; then `Lingering`.
    Closing,
    /// Our side is shut down; reading and discarding until the client closes or `LINGER` passes.
    Lingering,
}

/// What the answer needs to know about the request it answers.
#[derive(Debug)]
struct InFlight {
    head_only: bool,
    version: Version,
    keep_alive: bool,
    log: Option<LogRequest>,
    started: Instant,
}

/// One client connection.
#[derive(Debug)]
pub(crate) struct Conn {
    pub id: u64,
    token: usize,
    pub stream: Stream,
    peer: Arc<str>,
    buf: Vec<u8>,
    scanner: HeadScanner,
    state: State,
    out: Vec<u8>,
    out_pos: usize,
    peer_eof: bool,
    requests: u64,
    /// When the current phase times out (head, body, idle, write, linger); `None` while in flight.
    pub deadline: Option<Instant>,
}

impl Conn {
    pub(crate) fn new(
        id: u64,
        token: usize,
        stream: Stream,
        peer: Arc<str>,
        env: &Env<'_>,
    ) -> Self {
        Conn {
            id,
            token,
            stream,
            peer,
            buf: Vec::new(),
            scanner: HeadScanner::default(),
            state: State::Idle,
            out: Vec::new(),
            out_pos: 0,
            peer_eof: false,
            requests: 0,
            deadline: Some(env.now + env.shared.cfg.head_timeout),
        }
    }

    /// Only lingering: nothing left to answer.
    pub(crate) fn is_lingering(&self) -> bool {
        matches!(self.state, State::Lingering)
    }

    /// A connection with no request under way, that can be closed at once when the server drains:
    /// idle after at least one answered request.
    pub(crate) fn is_idle_between_requests(&self) -> bool {
        matches!(self.state, State::Idle) && self.buf.is_empty() && self.requests > 0
    }

    /// The socket is ready.
    pub(crate) fn on_ready(&mut self, readable: bool, writable: bool, env: &mut Env<'_>) -> Next {
        if writable && self.out_pos < self.out.len() && self.flush(env) == Next::Close {
            return Next::Close;
        }
        if readable {
            return self.read_and_advance(env);
        }
        Next::Keep
    }

    /// A timer check: close or answer 408 when the current phase's deadline has passed.
    pub(crate) fn on_timer(&mut self, env: &mut Env<'_>) -> Next {
        match self.deadline {
            Some(d) if d <= env.now => {}
            _ => return Next::Keep,
        }
        match self.state {
            State::Idle => Next::Close,
            State::Head => self.fail(
                HttpError::new(408, "timed out reading the request head"),
                env,
            ),
            State::Body { .. } => self.fail(
                HttpError::new(408, "timed out reading the request body"),
                env,
            ),
            State::InFlight(_) => Next::Keep,
            State::Writing | State::Closing | State::Lingering => Next::Close,
        }
    }

    fn read_cap(&self, env: &Env<'_>) -> usize {
        env.shared.cfg.limits.head_bytes + READ_CHUNK
    }

    fn read_and_advance(&mut self, env: &mut Env<'_>) -> Next {
        let mut tmp = [0u8; READ_CHUNK];
        loop {
            if self.peer_eof {
                break;
            }
            let busy = matches!(
                self.state,
                State::InFlight(_) | State::Writing | State::Closing
            );
            if busy && self.buf.len() >= self.read_cap(env) {
                // Pipelined input beyond what one head may take: leave it in the socket until the
                // answer is out (we read again then).
                break;
            }
            match self.stream.read(&mut tmp) {
                Ok(0) => self.peer_eof = true,
                Ok(n) => {
                    if matches!(self.state, State::Lingering) {
                        continue;
                    }
                    self.buf.extend_from_slice(&tmp[..n]);
                    if !busy && self.advance(env) == Next::Close {
                        return Next::Close;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Next::Close,
            }
        }
        if self.advance(env) == Next::Close {
            return Next::Close;
        }
        if self.peer_eof {
            match self.state {
                State::Idle | State::Head | State::Body { .. } | State::Lingering => {
                    return Next::Close
                }
                State::InFlight(_) | State::Writing | State::Closing => {}
            }
        }
        Next::Keep
    }

    /// Parse what is buffered, as far as it goes.
    fn advance(&mut self, env: &mut Env<'_>) -> Next {
        loop {
            match &mut self.state {
                State::Idle | State::Head => {
                    if env.draining
                        && self.is_idle_between_requests()
                        && self.out_pos >= self.out.len()
                    {
                        return Next::Close;
                    }
                    if self.buf.is_empty() {
                        return Next::Keep;
                    }
                    let limits = env.shared.cfg.limits;
                    match self.scanner.scan(&self.buf, &limits) {
                        Err(e) => return self.fail(e, env),
                        Ok(None) => {
                            if matches!(self.state, State::Idle) && self.scanner.started() {
                                self.state = State::Head;
                                self.deadline = Some(env.now + env.shared.cfg.head_timeout);
                            }
                            return Next::Keep;
                        }
                        Ok(Some((a, b))) => {
                            let head = match parse_head(&self.buf[a..b], &limits) {
                                Ok(h) => h,
                                Err(e) => return self.fail(e, env),
                            };
                            self.buf.drain(..b);
                            self.scanner = HeadScanner::default();
                            if head.framing == Framing::None {
                                self.dispatch(head, Vec::new(), env);
                                return Next::Keep;
                            }
                            if head.expect_continue && self.buf.is_empty() {
                                self.out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
                                if self.flush(env) == Next::Close {
                                    return Next::Close;
                                }
                            }
                            let decoder = BodyDecoder::new(head.framing);
                            let cap = match head.framing {
                                Framing::Length(n) => n.min(1 << 20) as usize,
                                _ => 0,
                            };
                            self.state = State::Body {
                                head,
                                decoder,
                                body: Vec::with_capacity(cap),
                            };
                            self.deadline = Some(env.now + env.shared.cfg.body_timeout);
                        }
                    }
                }
                State::Body { decoder, body, .. } => {
                    let limits = env.shared.cfg.limits;
                    match decoder.decode(&self.buf, body, &limits) {
                        Err(e) => return self.fail(e, env),
                        Ok((n, done)) => {
                            self.buf.drain(..n);
                            if n > 0 {
                                self.deadline = Some(env.now + env.shared.cfg.body_timeout);
                            }
                            if !done {
                                return Next::Keep;
                            }
                            let State::Body { head, body, .. } =
                                std::mem::replace(&mut self.state, State::Idle)
                            else {
                                unreachable!("state checked above")
                            };
                            self.dispatch(head, body, env);
                            return Next::Keep;
                        }
                    }
                }
                _ => return Next::Keep,
            }
        }
    }

    fn dispatch(&mut self, head: Head, body: Vec<u8>, env: &mut Env<'_>) {
        let shared = env.shared;
        let log = shared
            .cfg
            .access_log
            .as_ref()
            .map(|f| f.capture(&head.method, &head.uri, head.version, &head.headers));
        self.state = State::InFlight(InFlight {
            head_only: head.method == Method::HEAD,
            version: head.version,
            keep_alive: head.keep_alive,
            log,
            started: env.now,
        });
        self.deadline = None;
        self.requests += 1;
        let mut req = Request::new(body);
        *req.method_mut() = head.method;
        *req.uri_mut() = head.uri;
        *req.version_mut() = head.version;
        *req.headers_mut() = head.headers;
        req.extensions_mut()
            .insert(super::PeerAddr(self.peer.clone()));
        shared.submit(req, self.token, self.id);
    }

    /// The pool's answer to the request in flight.
    pub(crate) fn complete(
        &mut self,
        result: Result<Response<Vec<u8>>, Error>,
        env: &mut Env<'_>,
    ) -> Next {
        let State::InFlight(inflight) = std::mem::replace(&mut self.state, State::Writing) else {
            return Next::Keep;
        };
        let resp = match result {
            Ok(r) => r,
            Err(e) => {
                let status = e.http_status();
                if status == 500 {
                    log::error!(target: "prefork_pool::http", "{e}");
                } else {
                    log::warn!(target: "prefork_pool::http", "{e}");
                }
                error_response(status, short_reason(&e))
            }
        };
        let keep_alive =
            inflight.keep_alive && !self.peer_eof && !(env.draining && self.buf.is_empty());
        let opts = WriteOpts {
            head: inflight.head_only,
            version: inflight.version,
            keep_alive,
        };
        let (bytes, keep_alive) = write_response(&mut self.out, &resp, opts, env.date.get());
        if let (Some(fmt), Some(req)) = (env.shared.cfg.access_log.as_ref(), inflight.log.as_ref())
        {
            if log::log_enabled!(target: super::ACCESS_TARGET, log::Level::Info) {
                let line = fmt.render(
                    &self.peer,
                    req,
                    resp.status().as_u16(),
                    resp.headers(),
                    bytes,
                    inflight.started.elapsed(),
                    super::response::now_secs(),
                );
                log::info!(target: super::ACCESS_TARGET, "{line}");
            }
        }
        self.state = if keep_alive {
            State::Writing
        } else {
            State::Closing
        };
        self.deadline = Some(env.now + env.shared.cfg.write_timeout);
        self.flush(env)
    }

    /// Answer `e` and close.
    fn fail(&mut self, e: HttpError, env: &mut Env<'_>) -> Next {
        log::debug!(target: "prefork_pool::http", "{}: {} {}", self.peer, e.status, e.reason);
        let resp = error_response(e.status, &e.reason);
        let opts = WriteOpts {
            head: false,
            version: Version::HTTP_11,
            keep_alive: false,
        };
        write_response(&mut self.out, &resp, opts, env.date.get());
        self.buf.clear();
        self.state = State::Closing;
        self.deadline = Some(env.now + env.shared.cfg.write_timeout);
        self.flush(env)
    }

    fn flush(&mut self, env: &mut Env<'_>) -> Next {
        while self.out_pos < self.out.len() {
            match self.stream.write(&self.out[self.out_pos..]) {
                Ok(0) => return Next::Close,
                Ok(n) => {
                    self.out_pos += n;
                    if matches!(self.state, State::Writing | State::Closing) {
                        self.deadline = Some(env.now + env.shared.cfg.write_timeout);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Next::Keep,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Next::Close,
            }
        }
        self.out.clear();
        self.out_pos = 0;
        match self.state {
            State::Writing => {
                self.state = State::Idle;
                self.deadline = Some(env.now + env.shared.cfg.keepalive_timeout);
                if env.draining && self.buf.is_empty() {
                    return Next::Close;
                }
                // Resume: parse what was pipelined, read what waited in the socket.
                self.read_and_advance(env)
            }
            State::Closing => {
                self.stream.shutdown_write();
                self.state = State::Lingering;
                self.buf = Vec::new();
                self.deadline = Some(env.now + LINGER);
                self.read_and_advance(env)
            }
            _ => Next::Keep,
        }
    }
}

/// The short body the client gets for a pool error (the full message goes to the log).
fn short_reason(e: &Error) -> &'static str {
    match e {
        Error::Overloaded { .. } => {
            "overloaded: every worker is busy and the queue is full; retry later"
        }
        Error::DeadlineExceeded { .. } => "deadline exceeded: the handler did not answer in time",
        Error::Panicked { .. } => "internal error: the handler panicked",
        Error::ShuttingDown { .. } => "shutting down: retry on another server",
        Error::Reentrant { .. } => "internal error: re-entrant call refused",
        Error::LoopDetected { .. } => "loop detected: the handler keeps calling itself",
    }
}
