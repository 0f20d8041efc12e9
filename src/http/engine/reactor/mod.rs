//! The reactor: one thread, one `mio::Poll` loop over the listeners. It accepts, puts each new
//! connection in the connection lane (`lane.rs`, where the pool's idle workers read and run its
//! requests), takes the lane's events itself when no worker does (it takes the lane over), checks
//! timers, and drains on shutdown.
//!
//! Timers are checked by a sweep over the connections every [`TICK`] while there are connections,
//! so a timeout fires up to 100 ms late; with no connection the reactor sleeps until an event.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};

use crate::http::engine::acceptor::{
    is_transient, AcceptPolicy, Acceptor, StallClock, ACCEPT_BATCH, GATE_RECHECK, QUEUE_STALL,
};
use crate::http::engine::conn::Conn;
use crate::http::engine::handoff::{ConnConfig, Dispatch, Handoff};
use crate::http::engine::io::{Stream, TcpAddrs};
use crate::http::engine::lane::{Lane, LaneSleeper, TAKE_OVER_BUSY, TAKE_OVER_IDLE};
use crate::http::engine::stream::StreamStats;
use crate::http::ops::metrics::ServerMetrics;
use crate::http::ops::rate_limit::{suppressed_note, RateLimit, WARN_INTERVAL};
use crate::http::self_call::calls::SelfCalls;

/// How often connection timers are checked.
pub(crate) const TICK: Duration = Duration::from_millis(100);
/// How long accepting pauses after an accept error such as EMFILE.
pub(crate) const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
const WAKER: Token = Token(0);
const LISTENER_BASE: usize = 1;
/// The lane's epoll set, polled here while no worker waits on it.
const LANE: Token = Token(1 << 16);
/// The accept gate's wake fd (process mode): a sibling's change may let this process accept.
const GATE_WAKE: Token = Token((1 << 16) + 1);

/// The accept-failure warning: one line per interval (for the whole process), however often
/// accepting fails.
static ACCEPT_WARNINGS: RateLimit = RateLimit::new(WARN_INTERVAL);

enum Command {
    /// A graceful stop, ending by the deadline at the latest.
    Shutdown(Instant),
    /// A stop at once (see [`ReactorHandle::stop_now`]).
    StopNow,
}

/// Talks to a running reactor from other threads.
#[derive(Clone)]
pub(crate) struct ReactorHandle {
    cmd_tx: Sender<Command>,
    waker: Arc<Waker>,
    handoff: Arc<Handoff>,
}

impl ReactorHandle {
    /// Start draining: accept the backlog, close the listeners, finish the requests under way, and
    /// end the loop when no connection is left or at `deadline`.
    pub(crate) fn shutdown(&self, deadline: Instant) {
        // Readiness says 503 from this moment (before the listeners close).
        self.handoff.stopping.store(true, Ordering::SeqCst);
        if self.cmd_tx.send(Command::Shutdown(deadline)).is_ok() {
            let _ = self.waker.wake();
        }
    }

    /// Stop at once, whether a graceful stop is under way or not: the listen backlog is left to
    /// the kernel (it resets those connections when the listeners close), every request still
    /// arriving is answered 503 ([`Conn::on_stop`]), and the loop ends on its next pass; requests
    /// in flight are the Pool's to answer (its `shutdown_now`).
    pub(crate) fn stop_now(&self) {
        self.handoff.stopping.store(true, Ordering::SeqCst);
        if self.cmd_tx.send(Command::StopNow).is_ok() {
            let _ = self.waker.wake();
        }
    }

    /// Self-calls (over TCP or a Unix socket, from this process or a sibling) served and refused
    /// so far.
    pub(crate) fn self_calls(&self) -> SelfCalls {
        self.handoff.self_calls()
    }

    /// The server's HTTP metrics now.
    pub(crate) fn metrics(&self) -> ServerMetrics {
        self.handoff.metrics()
    }

    /// Streamed answers completed and cut so far.
    pub(crate) fn streams(&self) -> StreamStats {
        self.handoff.streams.snapshot()
    }
}

/// The reactor state, moved into its thread by [`Reactor::run`].
pub(crate) struct Reactor {
    poll: Poll,
    listeners: Vec<Option<Acceptor>>,
    lane: Arc<Lane>,
    handoff: Arc<Handoff>,
    cmd_rx: Receiver<Command>,
    paused_until: Option<Instant>,
    drain_deadline: Option<Instant>,
    last_sweep: Instant,
    /// The last look at the lane (see `Lane::take_over`), the workers' event count then, and
    /// whether a worker waited there.
    last_take_over: Instant,
    lane_seen: u64,
    lane_idle: bool,
    gate: Option<Arc<dyn AcceptPolicy>>,
    /// The gate said no: the listeners are not polled until it says yes.
    gated_off: bool,
    /// A graceful stop waits for the health routes' drain delay: when to drain, and the deadline.
    drain_at: Option<(Instant, Instant)>,
    /// How long connections have waited in a listener's queue, with no process accepting, while
    /// the gate said no.
    stall: StallClock,
    /// When `stall` last looked at the listeners' queues (a system call per listener): at most
    /// about every [`GATE_RECHECK`] (the pass it wakes for), however often the loop passes.
    queue_looked: Option<Instant>,
    /// The stop is at once ([`ReactorHandle::stop_now`]), not graceful.
    at_once: bool,
}

impl Reactor {
    pub(crate) fn new(
        listeners: Vec<Acceptor>,
        cfg: ConnConfig,
        dispatcher: Box<dyn Dispatch>,
    ) -> io::Result<(Reactor, ReactorHandle)> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (cmd_tx, cmd_rx) = crossbeam_channel::unbounded();
        let ls: Vec<Option<Acceptor>> = listeners.into_iter().map(Some).collect();
        let handoff = Arc::new(Handoff::new(cfg, dispatcher, Some(waker.clone())));
        for l in ls.iter().flatten() {
            handoff.lookup.owned.insert(l.raw_fd());
        }
        let lane = Lane::new()?;
        let sleeper = LaneSleeper {
            lane: lane.clone(),
            handoff: Arc::downgrade(&handoff),
        };
        if handoff.attach_sleeper(Some(Arc::new(sleeper))) {
            lane.set_attached(true);
        } else {
            // No workers to wait on the lane: the reactor polls it.
            poll.registry()
                .register(&mut SourceFd(&lane.raw_fd()), LANE, Interest::READABLE)?;
        }
        let handle = ReactorHandle {
            cmd_tx,
            waker,
            handoff: handoff.clone(),
        };
        let now = Instant::now();
        let mut reactor = Reactor {
            poll,
            listeners: ls,
            lane,
            handoff,
            cmd_rx,
            paused_until: None,
            drain_deadline: None,
            last_sweep: now,
            last_take_over: now,
            lane_seen: 0,
            lane_idle: true,
            gate: None,
            gated_off: false,
            drain_at: None,
            stall: StallClock::default(),
            queue_looked: None,
            at_once: false,
        };
        for i in 0..reactor.listeners.len() {
            reactor.register_listener(i)?;
        }
        Ok((reactor, handle))
    }

    /// Accepts only when `gate` says so (process mode), a bounded batch per wake-up, with the
    /// listeners polled level-triggered. Called before [`run`](Self::run).
    pub(crate) fn with_accept_gate(mut self, gate: Option<Arc<dyn AcceptPolicy>>) -> Self {
        if gate.is_some() {
            for i in 0..self.listeners.len() {
                self.deregister_listener(i);
            }
            if let Some(g) = &gate {
                self.lane.set_gate(g.clone());
                if let Some(fd) = g.wake_fd() {
                    // Edge-triggered (mio's only mode): each ping is one event, never read.
                    if let Err(e) = self.poll.registry().register(
                        &mut SourceFd(&fd),
                        GATE_WAKE,
                        Interest::READABLE,
                    ) {
                        log::warn!(target: "prefork_pool::http", "cannot poll the accept gate's wake-up ({e}); the gate is asked again every {GATE_RECHECK:?} instead");
                    }
                }
            }
            self.gate = gate;
            for i in 0..self.listeners.len() {
                if let Err(e) = self.register_listener(i) {
                    log::error!(target: "prefork_pool::http", "cannot poll a listener: {e}");
                }
            }
        }
        self
    }

    /// Polls listener `i`: edge-triggered through mio without a gate (the reactor accepts until
    /// `WouldBlock`); level-triggered with a gate, so that connections this process leaves in the
    /// queue (a bounded batch, or the gate said no) wake it, or a sibling, again.
    fn register_listener(&mut self, i: usize) -> io::Result<()> {
        let Some(Some(l)) = self.listeners.get(i) else {
            return Ok(());
        };
        let fd = l.raw_fd();
        let token = Token(LISTENER_BASE + i);
        if self.gate.is_none() {
            return self
                .poll
                .registry()
                .register(&mut SourceFd(&fd), token, Interest::READABLE);
        }
        // mio registers every source edge-triggered and has no flag for level-triggered.
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token.0 as u64,
        };
        // SAFETY: epoll_ctl(2) ADD on mio's own epoll fd (alive as long as `self.poll`) with the
        // listener's open fd and a valid event struct on the stack; mio reads the token back from
        // `u64` as for its own registrations, and `deregister_listener` removes it the same way as
        // any fd (EPOLL_CTL_DEL).
        let r = unsafe { libc::epoll_ctl(self.poll.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn deregister_listener(&mut self, i: usize) {
        if let Some(Some(l)) = self.listeners.get(i) {
            let _ = self.poll.registry().deregister(&mut SourceFd(&l.raw_fd()));
        }
    }

    /// Asks the gate (if any) whether to accept now, and polls or stops polling the listeners
    /// accordingly. Every loop pass: it also publishes this process's connection count.
    fn check_gate(&mut self) {
        let Some(gate) = self.gate.clone() else {
            return;
        };
        if self.drain_deadline.is_some() || self.paused_until.is_some() {
            return;
        }
        let open = gate.may_accept(self.lane.live());
        self.take_stalled(open, &*gate);
        if open == self.gated_off {
            self.gated_off = !open;
            for i in 0..self.listeners.len() {
                if open {
                    if let Err(e) = self.register_listener(i) {
                        log::error!(target: "prefork_pool::http", "cannot poll a listener: {e}");
                    }
                } else {
                    self.deregister_listener(i);
                }
            }
        }
    }

    /// While the gate says no: takes one connection from a listener whose queue has waited for
    /// [`QUEUE_STALL`] with no process accepting (the process the gates pick does not accept; see
    /// [`StallClock`]).
    fn take_stalled(&mut self, open: bool, gate: &dyn AcceptPolicy) {
        if open {
            self.stall.reset();
            self.queue_looked = None;
            return;
        }
        let now = Instant::now();
        if self
            .queue_looked
            .is_some_and(|t| now.duration_since(t) < GATE_RECHECK / 2)
        {
            return;
        }
        self.queue_looked = Some(now);
        let queued = self.listeners.iter().flatten().any(Acceptor::queued);
        if !self
            .stall
            .stalled(queued, || gate.accepted_everywhere(), now)
        {
            return;
        }
        for l in self.listeners.iter().flatten().filter(|l| l.queued()) {
            if let Ok((stream, peer, addrs)) = l.accept() {
                log::debug!(target: "prefork_pool::http", "accepted a connection that waited {QUEUE_STALL:?} for a sibling");
                self.add_conn(stream, peer, addrs, now);
                // One per pass: the others wait for the next pass.
                break;
            }
        }
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
                    .lane
                    .cells()
                    .iter()
                    .filter(|c| c.active(&self.handoff, now))
                    .count();
                if active == 0 || now >= d {
                    if active > 0 {
                        self.cut_drain_short(active, now);
                    }
                    break;
                }
            }
            let timeout = self.next_timeout(now);
            self.handoff.sleeping.store(true, Ordering::SeqCst);
            let polled = self.poll.poll(&mut events, timeout);
            self.handoff.sleeping.store(false, Ordering::SeqCst);
            if let Err(e) = polled {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                log::error!(target: "prefork_pool::http", "poll failed: {e}; the server stops");
                break;
            }
            let now = Instant::now();
            for ev in events.iter() {
                let t = ev.token();
                if t == WAKER || t == GATE_WAKE {
                    // The gate is asked again at the end of the pass.
                    continue;
                } else if t == LANE {
                    self.lane.drain_events(&self.handoff, now);
                } else if self.paused_until.is_none() && !self.gated_off {
                    self.accept(t.0 - LISTENER_BASE, now);
                }
            }
            while let Ok(cmd) = self.cmd_rx.try_recv() {
                match cmd {
                    Command::Shutdown(deadline) => self.shutdown_command(deadline, now),
                    Command::StopNow => {
                        self.at_once = true;
                        self.begin_drain(now, now);
                    }
                }
            }
            self.take_over(now);
            self.timers(now);
            self.check_gate();
        }
        // Streamed answers still being written end at their next chunk; the workers stop
        // waiting on the lane.
        self.handoff.stopped.store(true, Ordering::SeqCst);
        // Self-calls still waiting for a spare thread are answered 503 now.
        self.handoff
            .expire_waiting_self_calls(Instant::now() + Duration::from_secs(86_400));
        if self.lane.attached() {
            self.handoff.attach_sleeper(None);
        }
        self.lane.release();
        for cell in self.lane.cells() {
            cell.shut(&self.handoff);
        }
        self.close_listeners();
    }

    /// The take-over of the lane (see `Lane::take_over`): a look every [`TAKE_OVER_BUSY`] while no
    /// worker waited on the lane at the last look, else every [`TAKE_OVER_IDLE`].
    fn take_over(&mut self, now: Instant) {
        if !self.lane.attached() || self.lane.live() == 0 {
            return;
        }
        if now.duration_since(self.last_take_over) < self.take_over_every() {
            return;
        }
        self.last_take_over = now;
        let (seen, idle) = self.lane.take_over(&self.handoff, self.lane_seen, now);
        self.lane_seen = seen;
        self.lane_idle = idle;
    }

    fn take_over_every(&self) -> Duration {
        if self.lane_idle {
            TAKE_OVER_IDLE
        } else {
            TAKE_OVER_BUSY
        }
    }

    fn next_timeout(&self, now: Instant) -> Option<Duration> {
        let mut t: Option<Instant> = None;
        let mut consider = |i: Instant| t = Some(t.map_or(i, |t| t.min(i)));
        if self.lane.live() > 0 {
            consider(self.last_sweep + TICK);
            if self.lane.attached() {
                consider(self.last_take_over + self.take_over_every());
            }
        }
        if let Some(p) = self.paused_until {
            consider(p);
        }
        if let Some(d) = self.drain_deadline {
            consider(d);
        }
        if let Some((at, _)) = self.drain_at {
            consider(at);
        }
        if self.gated_off {
            consider(now + GATE_RECHECK);
        }
        t.map(|t| t.saturating_duration_since(now))
    }

    fn accept(&mut self, li: usize, now: Instant) {
        let mut taken = 0;
        loop {
            if let Some(gate) = &self.gate {
                if self.drain_deadline.is_none() {
                    if taken >= ACCEPT_BATCH {
                        return;
                    }
                    if !gate.may_accept(self.lane.live()) {
                        self.gated_off = true;
                        for i in 0..self.listeners.len() {
                            self.deregister_listener(i);
                        }
                        return;
                    }
                }
            }
            let res = match self.listeners.get(li) {
                Some(Some(l)) => l.accept(),
                _ => return,
            };
            match res {
                Ok((stream, peer, addrs)) => {
                    taken += 1;
                    self.add_conn(stream, peer, addrs, now);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if is_transient(&e) => {
                    self.handoff.metrics.accept_error();
                    log::debug!(target: "prefork_pool::http", "accept: {e} (skipped)");
                }
                Err(e) => {
                    self.handoff.metrics.accept_error();
                    if let Some(suppressed) = ACCEPT_WARNINGS.allow(now) {
                        log::warn!(
                            target: "prefork_pool::http",
                            "accept failed: {e}; pausing accepts for {ACCEPT_BACKOFF:?} (raise the open-file limit if this is EMFILE){}",
                            suppressed_note(suppressed)
                        );
                    }
                    self.pause_accepts(now);
                    return;
                }
            }
        }
    }

    fn add_conn(&mut self, stream: Stream, peer: Arc<str>, addrs: TcpAddrs, now: Instant) {
        #[cfg(feature = "tls")]
        let stream = match (stream, &self.handoff.cfg.tls) {
            (Stream::Tcp(s), Some(config)) => {
                match crate::http::engine::tls_stream::TlsStream::new(s, config) {
                    Ok(s) => Stream::Tls(Box::new(s)),
                    Err(e) => {
                        log::error!(target: "prefork_pool::http", "TLS: a connection could not start: {e}");
                        return;
                    }
                }
            }
            (s, _) => s,
        };
        let fd = stream.raw_fd();
        // The self-call search skips it (removed when the lane closes it).
        self.handoff.lookup.owned.insert(fd);
        let conn = Conn::new(stream, peer, addrs, &self.handoff, now);
        // Counted first: a worker may answer and close it before `insert` returns.
        self.handoff.metrics.opened();
        if self.lane.insert(fd, conn).is_none() {
            self.handoff.lookup.owned.remove(fd);
            self.handoff.metrics.closed();
        }
    }

    fn pause_accepts(&mut self, now: Instant) {
        if !self.gated_off {
            for i in 0..self.listeners.len() {
                self.deregister_listener(i);
            }
        }
        self.gated_off = false;
        self.paused_until = Some(now + ACCEPT_BACKOFF);
    }

    fn timers(&mut self, now: Instant) {
        if let Some((at, deadline)) = self.drain_at {
            if now >= at {
                self.begin_drain(deadline, now);
            }
        }
        if self.paused_until.is_some_and(|p| now >= p) {
            self.paused_until = None;
            for i in 0..self.listeners.len() {
                let _ = self.register_listener(i);
            }
            for i in 0..self.listeners.len() {
                if self.paused_until.is_none() && !self.gated_off {
                    self.accept(i, now);
                }
            }
        }
        if now.duration_since(self.last_sweep) >= TICK {
            self.last_sweep = now;
            self.handoff.tick(now);
            for cell in self.lane.cells() {
                if cell.due(&self.handoff, now) {
                    cell.with(&self.handoff, now, false, |conn, env| conn.on_timer(env));
                }
            }
        }
    }
}

mod drain;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::engine::handoff::Done;
    use crate::Error;
    use http::{Request, Response};
    use std::io::{Read, Write};
    use std::net::TcpStream;

    /// Runs each request on its own thread: enough to drive the reactor without the Pool.
    struct Threads;
    impl Dispatch for Threads {
        fn dispatch(&self, req: Request<Vec<u8>>, _depth: u32, done: Done) {
            std::thread::spawn(move || {
                let body = format!("{} {} {}", req.method(), req.uri(), req.body().len());
                done.finish(Ok(Response::new(body.into_bytes())))
            });
        }
        fn idle_workers(&self) -> usize {
            usize::MAX
        }
        fn call_here(
            &self,
            _req: Request<Vec<u8>>,
            _depth: u32,
        ) -> Result<Response<Vec<u8>>, Error> {
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
        let cfg = ConnConfig::for_tests();
        let (r, h) = Reactor::new(vec![Acceptor::tcp(l)], cfg, Box::new(Threads)).unwrap();
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
