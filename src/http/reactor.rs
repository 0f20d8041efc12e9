//! The reactor: one thread, one `mio::Poll`, every socket. It accepts, reads and parses, hands each
//! complete request to the pool with a completion callback, and writes the answers that come back
//! through a channel (the callback wakes the poll with a `mio::Waker`).
//!
//! Timers are checked by a sweep over the connections every [`TICK`] while there are connections,
//! so a timeout fires up to 100 ms late; with no connection the reactor sleeps until an event.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use http::{Request, Response};
use mio::event::Source;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};

use super::access_log::AccessLogFormat;
use super::conn::{Conn, Env, Next, Reply, Stream};
use super::loopback::request_depth;
use super::parse::Limits;
use super::response::{error_response, DateCache};
use super::self_call::{Caller, SelfCalls, SiblingPids, Warned};
use super::stuck::BusyWorker;
use crate::Error;

/// How often connection timers are checked.
pub(crate) const TICK: Duration = Duration::from_millis(100);
/// During a drain, how long a connection that has sent nothing yet may wait for its request.
pub(crate) const DRAIN_GRACE: Duration = Duration::from_secs(1);
/// How long accepting pauses after an accept error such as EMFILE.
pub(crate) const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

const WAKER: Token = Token(0);
const LISTENER_BASE: usize = 1;
const CONN_BASE: usize = 1 << 16;

/// For a TCP connection: the client's address and ours.
pub(crate) type TcpAddrs = Option<(SocketAddr, SocketAddr)>;

/// The completion callback a dispatcher calls exactly once.
pub(crate) type Done = Box<dyn FnOnce(Result<Response<Vec<u8>>, Error>) + Send>;

/// Where complete requests go: the Pool (or, in unit tests, anything else).
pub(crate) trait Dispatch: Send + Sync + 'static {
    fn dispatch(&self, req: Request<Vec<u8>>, done: Done);
    /// Workers waiting for a job now.
    fn idle_workers(&self) -> usize;
    /// Run the handler on the calling thread (a spare thread, for a self-call over TCP).
    fn call_here(&self, req: Request<Vec<u8>>) -> Result<Response<Vec<u8>>, Error>;
    /// The pool's name, for logs.
    fn name(&self) -> &str;
    /// The reactor's periodic timer (every [`TICK`] while there are connections): the stuck check.
    fn tick(&self, _now: Instant) {}
    /// The workers running a request now, for the self-call warning.
    fn busy(&self, _now: Instant) -> Vec<BusyWorker> {
        Vec::new()
    }
}

/// The reactor's settings.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub limits: Limits,
    pub head_timeout: Duration,
    pub body_timeout: Duration,
    pub keepalive_timeout: Duration,
    pub write_timeout: Duration,
    pub access_log: Option<AccessLogFormat>,
    /// Spare threads for requests this process sent itself over TCP (0: off).
    pub max_spare: usize,
    /// The other processes whose requests count as self-calls (pre-fork sibling workers).
    pub siblings: Option<SiblingPids>,
    /// Deepest chain of calls a request may be in (its `X-Prefork-Depth`); deeper: 508.
    pub max_depth: u32,
}

/// An answer, written by the thread that completed the request (or not entirely: `rest`).
pub(crate) struct Completion {
    pub token: usize,
    pub id: u64,
    pub rest: Vec<u8>,
    pub keep_alive: bool,
    /// Writing failed: the connection is gone.
    pub failed: bool,
}

/// What connections share: the settings and the way to the pool.
pub(crate) struct Shared {
    pub cfg: Config,
    dispatcher: Box<dyn Dispatch>,
    tx: Sender<Completion>,
    waker: Arc<Waker>,
    /// The server is draining (graceful shutdown): answers say `Connection: close`.
    pub draining: AtomicBool,
    /// The reactor is (about to be) blocked in `poll`: a wake-up is needed to reach it.
    sleeping: AtomicBool,
    /// Spare threads running self-calls now.
    spare: AtomicUsize,
    /// Self-calls over TCP served on a spare thread.
    self_served: AtomicU64,
    /// Self-calls over TCP refused (503) because every spare thread was taken.
    self_refused: AtomicU64,
    warned: Warned,
}

impl Shared {
    pub(crate) fn idle_workers(&self) -> usize {
        self.dispatcher.idle_workers()
    }

    /// Run `req`: on a spare thread if it is a self-call (`caller`), else through the pool.
    pub(crate) fn submit(
        self: &Arc<Self>,
        req: Request<Vec<u8>>,
        reply: Reply,
        caller: Option<Caller>,
    ) {
        let depth = request_depth(&req);
        if depth > self.cfg.max_depth {
            let err = Error::LoopDetected {
                depth,
                max: self.cfg.max_depth,
            };
            super::conn::finish(self, reply, Err(err));
            return;
        }
        if let Some(caller) = caller {
            if self.reserve_spare() {
                self.spare_thread(req, reply, caller);
            } else {
                self.refuse_self_call(req, reply, caller);
            }
            return;
        }
        let shared = self.clone();
        self.dispatcher.dispatch(
            req,
            Box::new(move |result| super::conn::finish(&shared, reply, result)),
        );
    }

    /// Reserve one of the spare threads for a request this process sent itself over TCP.
    fn reserve_spare(&self) -> bool {
        if self.spare.fetch_add(1, Ordering::SeqCst) >= self.cfg.max_spare {
            self.spare.fetch_sub(1, Ordering::SeqCst);
            return false;
        }
        true
    }

    /// The counts of self-calls served and refused.
    pub(crate) fn self_calls(&self) -> SelfCalls {
        SelfCalls {
            served: self.self_served.load(Ordering::Relaxed),
            refused: self.self_refused.load(Ordering::Relaxed),
        }
    }

    /// Every spare thread is taken: answer 503 at once rather than queue a request that waits for
    /// a worker that waits for it.
    fn refuse_self_call(&self, req: Request<Vec<u8>>, reply: Reply, caller: Caller) {
        self.self_refused.fetch_add(1, Ordering::Relaxed);
        let route = format!("{} {}", req.method(), req.uri().path());
        let key = match caller.sibling {
            None => format!("refused {route}"),
            Some(_) => format!("refused {route} from a sibling"),
        };
        if self.warned.first(&key) {
            log::warn!(
                target: "prefork_pool::http",
                "`{route}` was requested over {} by {} while every worker of pool `{}` and all {} \
                 spare thread(s) (`max_spare`) were busy: answered 503 at once instead of waiting \
                 for a worker that waits for it. Fix: call the handler through the `Loopback` in \
                 the request's extensions, or make the call asynchronous",
                caller.via,
                caller.who(),
                self.dispatcher.name(),
                self.cfg.max_spare
            );
        }
        let resp = error_response(
            503,
            "self-call refused: this server (or a sibling worker process) called itself while \
             every worker and every spare thread was busy; call it through the Loopback instead",
        );
        super::conn::finish(self, reply, Ok(resp));
    }

    /// Run the request on the spare thread reserved with `reserve_spare`.
    fn spare_thread(self: &Arc<Self>, req: Request<Vec<u8>>, reply: Reply, caller: Caller) {
        self.self_served.fetch_add(1, Ordering::Relaxed);
        let route = format!("{} {}", req.method(), req.uri().path());
        // Once per route, and once more if a sibling process calls it too (a different story).
        let key = match caller.sibling {
            None => route.clone(),
            Some(_) => format!("{route} from a sibling"),
        };
        if self.warned.first(&key) {
            let busy = self.dispatcher.busy(Instant::now());
            let fix = "Fix: call the handler through the `Loopback` in the request's extensions \
                       (`req.extensions().get::<prefork_pool::http::Loopback>()`), or make the \
                       call asynchronous (do not wait for its answer in the handler)";
            match caller.sibling {
                None => log::warn!(
                    target: "prefork_pool::http",
                    "self-call over {}: {} on `{route}`, which it sent to its own server \
                     (pool `{}`) with an HTTP client while every worker was busy; it would have \
                     deadlocked (the request waits in the queue for a worker that waits for it, \
                     until the deadline). Served on a spare thread (`max_spare` = {}). {fix}",
                    caller.via,
                    super::self_call::who_waits(&busy),
                    self.dispatcher.name(),
                    self.cfg.max_spare
                ),
                Some(pid) => log::warn!(
                    target: "prefork_pool::http",
                    "self-call over {} from sibling worker pid {pid} (a worker process of the same \
                     supervisor): a handler there is waiting on `{route}`, which it sent to its \
                     own service with an HTTP client, and it reached this process (pid {}, pool \
                     `{}`) while every worker here was busy ({}); with the workers of both \
                     processes waiting on each other's calls it would have deadlocked (each \
                     request waits in a queue for a worker that waits for it, until the deadline). \
                     Served on a spare thread (`max_spare` = {}). {fix}",
                    caller.via,
                    std::process::id(),
                    self.dispatcher.name(),
                    super::self_call::busy_here(&busy),
                    self.cfg.max_spare
                ),
            }
        }
        // Kept here too, so that it can still be answered if the thread cannot be spawned.
        let job = Arc::new(parking_lot::Mutex::new(Some((req, reply))));
        let theirs = job.clone();
        let shared = self.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("{}-selfcall", self.dispatcher.name()))
            .spawn(move || {
                let Some((req, reply)) = theirs.lock().take() else {
                    return;
                };
                let result = shared.dispatcher.call_here(req);
                shared.spare.fetch_sub(1, Ordering::SeqCst);
                super::conn::finish(&shared, reply, result);
            });
        if let Err(e) = spawned {
            self.spare.fetch_sub(1, Ordering::SeqCst);
            self.self_served.fetch_sub(1, Ordering::Relaxed);
            log::error!(target: "prefork_pool::http", "cannot spawn a spare thread: {e}");
            if let Some((req, reply)) = job.lock().take() {
                self.refuse_self_call(req, reply, caller);
            }
        }
    }

    pub(crate) fn complete(&self, c: Completion) {
        let _ = self.tx.send(c);
    }

    /// Wake the reactor if it sleeps (one wake-up serves every completion queued before it runs).
    pub(crate) fn wake(&self) {
        if self.sleeping.swap(false, Ordering::SeqCst) {
            let _ = self.waker.wake();
        }
    }
}

/// A listening socket.
#[derive(Debug)]
pub(crate) enum Listener {
    Tcp(mio::net::TcpListener),
    /// With the path to remove when the server stops (only for sockets the server bound itself).
    #[cfg(unix)]
    Unix(mio::net::UnixListener, Option<PathBuf>),
}

impl Listener {
    fn source(&mut self) -> &mut dyn Source {
        match self {
            Listener::Tcp(l) => l,
            #[cfg(unix)]
            Listener::Unix(l, _) => l,
        }
    }

    fn accept(&self) -> io::Result<(Stream, Arc<str>, TcpAddrs)> {
        match self {
            Listener::Tcp(l) => l.accept().map(|(s, a)| {
                let _ = s.set_nodelay(true);
                let local = s.local_addr().ok().map(|local| (a, local));
                (Stream::Tcp(s), Arc::from(a.ip().to_string()), local)
            }),
            #[cfg(unix)]
            Listener::Unix(l, _) => l
                .accept()
                .map(|(s, _)| (Stream::Unix(s), Arc::from("unix"), None)),
        }
    }

    fn close(self) {
        #[cfg(unix)]
        if let Listener::Unix(_, Some(path)) = &self {
            let _ = std::fs::remove_file(path);
        }
    }
}

enum Command {
    Shutdown(Instant),
}

/// Talks to a running reactor from other threads.
#[derive(Clone)]
pub(crate) struct ReactorHandle {
    cmd_tx: Sender<Command>,
    waker: Arc<Waker>,
    shared: Arc<Shared>,
}

impl ReactorHandle {
    /// Start draining: accept the backlog, close the listeners, finish the requests under way, and
    /// end the loop when no connection is left or at `deadline`.
    pub(crate) fn shutdown(&self, deadline: Instant) {
        if self.cmd_tx.send(Command::Shutdown(deadline)).is_ok() {
            let _ = self.waker.wake();
        }
    }

    /// Self-calls over TCP served and refused so far.
    pub(crate) fn self_calls(&self) -> SelfCalls {
        self.shared.self_calls()
    }
}

/// The reactor state, moved into its thread by [`Reactor::run`].
pub(crate) struct Reactor {
    poll: Poll,
    listeners: Vec<Option<Listener>>,
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    live: usize,
    next_id: u64,
    shared: Arc<Shared>,
    rx: Receiver<Completion>,
    cmd_rx: Receiver<Command>,
    date: DateCache,
    paused_until: Option<Instant>,
    drain_deadline: Option<Instant>,
    last_sweep: Instant,
}

impl Reactor {
    pub(crate) fn new(
        listeners: Vec<Listener>,
        cfg: Config,
        dispatcher: Box<dyn Dispatch>,
    ) -> io::Result<(Reactor, ReactorHandle)> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (tx, rx) = crossbeam_channel::unbounded();
        let (cmd_tx, cmd_rx) = crossbeam_channel::unbounded();
        let mut ls = Vec::with_capacity(listeners.len());
        for (i, mut l) in listeners.into_iter().enumerate() {
            poll.registry()
                .register(l.source(), Token(LISTENER_BASE + i), Interest::READABLE)?;
            ls.push(Some(l));
        }
        let shared = Arc::new(Shared {
            cfg,
            dispatcher,
            tx,
            waker: waker.clone(),
            draining: AtomicBool::new(false),
            sleeping: AtomicBool::new(false),
            spare: AtomicUsize::new(0),
            self_served: AtomicU64::new(0),
            self_refused: AtomicU64::new(0),
            warned: Warned::default(),
        });
        let handle = ReactorHandle {
            cmd_tx,
            waker,
            shared: shared.clone(),
        };
        Ok((
            Reactor {
                poll,
                listeners: ls,
                conns: Vec::new(),
                free: Vec::new(),
                live: 0,
                next_id: 0,
                shared,
                rx,
                cmd_rx,
                date: DateCache::new(),
                paused_until: None,
                drain_deadline: None,
                last_sweep: Instant::now(),
            },
            handle,
        ))
    }

    /// The loop. Returns when a drain has finished (or its deadline passed), or on a poll failure.
    pub(crate) fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        loop {
            let now = Instant::now();
            if let Some(d) = self.drain_deadline {
                // Lingering connections are not waited for: their input is drained below before
                // they close, so the close is a FIN, not a reset that could lose the answer.
                let active = self
                    .conns
                    .iter()
                    .flatten()
                    .filter(|c| !c.is_lingering())
                    .count();
                if active == 0 || now >= d {
                    if active > 0 {
                        log::warn!(
                            target: "prefork_pool::http",
                            "graceful shutdown timed out with {active} connection(s) still open; closing them"
                        );
                    }
                    break;
                }
            }
            let mut timeout = self.next_timeout(now);
            self.shared.sleeping.store(true, Ordering::SeqCst);
            if !self.rx.is_empty() {
                timeout = Some(Duration::ZERO);
            }
            let polled = self.poll.poll(&mut events, timeout);
            self.shared.sleeping.store(false, Ordering::SeqCst);
            if let Err(e) = polled {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                log::error!(target: "prefork_pool::http", "poll failed: {e}; the server stops");
                break;
            }
            let now = Instant::now();
            // Answers first: a connection whose answer a worker wrote is idle again before its
            // next request is read.
            while let Ok(c) = self.rx.try_recv() {
                self.complete(c, now);
            }
            for ev in events.iter() {
                let t = ev.token().0;
                if ev.token() == WAKER {
                    continue;
                } else if t < CONN_BASE {
                    if self.paused_until.is_none() {
                        self.accept(t - LISTENER_BASE, now);
                    }
                } else {
                    let read_closed = ev.is_read_closed() || ev.is_error();
                    let readable = ev.is_readable() || read_closed;
                    let writable = ev.is_writable() || ev.is_write_closed();
                    self.conn_event(t - CONN_BASE, readable, read_closed, writable, now);
                }
            }
            while let Ok(c) = self.rx.try_recv() {
                self.complete(c, now);
            }
            while let Ok(cmd) = self.cmd_rx.try_recv() {
                match cmd {
                    Command::Shutdown(deadline) => self.begin_drain(deadline, now),
                }
            }
            self.timers(now);
        }
        for idx in 0..self.conns.len() {
            if let Some(c) = self.conns[idx].as_mut() {
                c.discard_input();
            }
            self.close(idx);
        }
        self.close_listeners();
    }

    fn next_timeout(&self, now: Instant) -> Option<Duration> {
        let mut t: Option<Instant> = None;
        let mut consider = |i: Instant| t = Some(t.map_or(i, |t| t.min(i)));
        if self.live > 0 {
            consider(self.last_sweep + TICK);
        }
        if let Some(p) = self.paused_until {
            consider(p);
        }
        if let Some(d) = self.drain_deadline {
            consider(d);
        }
        t.map(|t| t.saturating_duration_since(now))
    }

    fn env(&mut self, now: Instant) -> (Env<'_>, &mut Vec<Option<Conn>>) {
        (
            Env {
                shared: &self.shared,
                date: &mut self.date,
                draining: self.drain_deadline.is_some(),
                now,
            },
            &mut self.conns,
        )
    }

    fn conn_event(
        &mut self,
        idx: usize,
        readable: bool,
        read_closed: bool,
        writable: bool,
        now: Instant,
    ) {
        let (mut env, conns) = self.env(now);
        let Some(conn) = conns.get_mut(idx).and_then(|c| c.as_mut()) else {
            return;
        };
        if conn.on_ready(readable, read_closed, writable, &mut env) == Next::Close {
            self.close(idx);
        }
    }

    fn complete(&mut self, c: Completion, now: Instant) {
        let Some(idx) = c.token.checked_sub(CONN_BASE) else {
            return;
        };
        let (mut env, conns) = self.env(now);
        // When the connection is gone (or its slot reused), the answer has nowhere to go.
        if let Some(conn) = conns.get_mut(idx).and_then(|c| c.as_mut()) {
            if conn.id == c.id
                && conn.complete(c.rest, c.keep_alive, c.failed, &mut env) == Next::Close
            {
                self.close(idx);
            }
        }
    }

    fn accept(&mut self, li: usize, now: Instant) {
        loop {
            let res = match self.listeners.get(li) {
                Some(Some(l)) => l.accept(),
                _ => return,
            };
            match res {
                Ok((stream, peer, addrs)) => self.add_conn(stream, peer, addrs, now),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if is_transient(&e) => {
                    log::debug!(target: "prefork_pool::http", "accept: {e} (skipped)");
                }
                Err(e) => {
                    log::warn!(
                        target: "prefork_pool::http",
                        "accept failed: {e}; pausing accepts for {ACCEPT_BACKOFF:?} (raise the open-file limit if this is EMFILE)"
                    );
                    self.pause_accepts(now);
                    return;
                }
            }
        }
    }

    fn add_conn(&mut self, stream: Stream, peer: Arc<str>, addrs: TcpAddrs, now: Instant) {
        let idx = self.free.pop().unwrap_or_else(|| {
            self.conns.push(None);
            self.conns.len() - 1
        });
        if let Err(e) = self.poll.registry().register(
            &mut SourceFd(&stream.raw_fd()),
            Token(CONN_BASE + idx),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            log::warn!(target: "prefork_pool::http", "cannot register a connection: {e}");
            self.free.push(idx);
            return;
        }
        let id = self.next_id;
        self.next_id += 1;
        let (env, conns) = self.env(now);
        conns[idx] = Some(Conn::new(id, CONN_BASE + idx, stream, peer, addrs, &env));
        self.live += 1;
        self.conn_event(idx, true, false, false, now);
    }

    fn close(&mut self, idx: usize) {
        if let Some(conn) = self.conns.get_mut(idx).and_then(|c| c.take()) {
            let fd = conn.link.stream.raw_fd();
            let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
            self.free.push(idx);
            self.live -= 1;
        }
    }

    fn pause_accepts(&mut self, now: Instant) {
        for l in self.listeners.iter_mut().flatten() {
            let _ = self.poll.registry().deregister(l.source());
        }
        self.paused_until = Some(now + ACCEPT_BACKOFF);
    }

    fn timers(&mut self, now: Instant) {
        if self.paused_until.is_some_and(|p| now >= p) {
            self.paused_until = None;
            for (i, l) in self.listeners.iter_mut().enumerate() {
                if let Some(l) = l {
                    let _ = self.poll.registry().register(
                        l.source(),
                        Token(LISTENER_BASE + i),
                        Interest::READABLE,
                    );
                }
            }
            for i in 0..self.listeners.len() {
                if self.paused_until.is_none() {
                    self.accept(i, now);
                }
            }
        }
        if now.duration_since(self.last_sweep) >= TICK {
            self.last_sweep = now;
            self.shared.dispatcher.tick(now);
            for idx in 0..self.conns.len() {
                let (mut env, conns) = self.env(now);
                let Some(conn) = conns[idx].as_mut() else {
                    continue;
                };
                if conn.deadline.is_some_and(|d| d <= now) && conn.on_timer(&mut env) == Next::Close
                {
                    self.close(idx);
                }
            }
        }
    }

    fn begin_drain(&mut self, deadline: Instant, now: Instant) {
        if self.drain_deadline.is_some() {
            return;
        }
        // Serve what is already in the listen backlog, then stop listening.
        self.paused_until = None;
        for i in 0..self.listeners.len() {
            self.accept(i, now);
        }
        self.paused_until = None;
        self.close_listeners();
        self.shared.draining.store(true, Ordering::SeqCst);
        self.drain_deadline = Some(deadline);
        for idx in 0..self.conns.len() {
            let Some(conn) = self.conns[idx].as_mut() else {
                continue;
            };
            if conn.is_idle_between_requests() {
                self.close(idx);
            } else {
                // A connection that has not sent a byte yet gets a short grace, not a whole head
                // timeout: a client in the backlog has normally sent its request already.
                conn.limit_fresh_wait(now + DRAIN_GRACE);
            }
        }
    }

    fn close_listeners(&mut self) {
        for l in self.listeners.iter_mut() {
            if let Some(mut l) = l.take() {
                let _ = self.poll.registry().deregister(l.source());
                l.close();
            }
        }
    }
}

/// Accept errors that concern one connection only: skip it and accept the next.
fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::Interrupted
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) || matches!(e.raw_os_error(), Some(libc::EPROTO) | Some(libc::EPERM))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpStream;

    /// Runs each request on its own thread: enough to drive the reactor without the Pool.
    struct Threads;
    impl Dispatch for Threads {
        fn dispatch(&self, req: Request<Vec<u8>>, done: Done) {
            std::thread::spawn(move || {
                let body = format!("{} {} {}", req.method(), req.uri(), req.body().len());
                done(Ok(Response::new(body.into_bytes())))
            });
        }
        fn idle_workers(&self) -> usize {
            usize::MAX
        }
        fn call_here(&self, _req: Request<Vec<u8>>) -> Result<Response<Vec<u8>>, Error> {
            unreachable!("never without idle workers")
        }
        fn name(&self) -> &str {
            "threads"
        }
    }

    fn start() -> (
        std::net::SocketAddr,
        ReactorHandle,
        std::thread::JoinHandle<()>,
    ) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let addr = l.local_addr().unwrap();
        let cfg = Config {
            limits: Limits::default(),
            head_timeout: Duration::from_secs(5),
            body_timeout: Duration::from_secs(5),
            keepalive_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(5),
            access_log: None,
            max_spare: 0,
            siblings: None,
            max_depth: 32,
        };
        let (r, h) = Reactor::new(
            vec![Listener::Tcp(mio::net::TcpListener::from_std(l))],
            cfg,
            Box::new(Threads),
        )
        .unwrap();
        let t = std::thread::spawn(move || r.run());
        (addr, h, t)
    }

    fn read_all(s: &mut TcpStream) -> String {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut v = Vec::new();
        s.read_to_end(&mut v).unwrap();
        String::from_utf8_lossy(&v).into_owned()
    }

    #[test]
    fn pipelined_split_and_limits() {
        let (addr, h, t) = start();
        let mut s = TcpStream::connect(addr).unwrap();
        let req = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n";
        for b in req.iter() {
            s.write_all(&[*b]).unwrap();
        }
        s.write_all(b"POST /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET /c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        let out = read_all(&mut s);
        let a = out.find("GET /a 0").unwrap();
        let b = out.find("POST /b 3").unwrap();
        let c = out.find("GET /c 0").unwrap();
        assert!(a < b && b < c, "{out}");
        assert!(out.contains("connection: close"));

        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        )
        .unwrap();
        let out = read_all(&mut s);
        assert!(out.starts_with("HTTP/1.1 400 "), "{out}");

        h.shutdown(Instant::now() + Duration::from_secs(5));
        t.join().unwrap();
        assert!(TcpStream::connect(addr).is_err());
    }
}
