//! The connection lane: every connection the server has accepted, in one epoll set that the
//! pool's idle workers wait on ([`LaneSleeper`]), so that the worker that reads a request runs
//! it: no hand-off to another thread, no wake-up, for a request that finds a worker idle.
//!
//! Each connection sits in a [`ConnCell`] and is watched edge-triggered (`EPOLLET`), registered
//! once: an event (new bytes, the client's end, room to write) goes to one thread, which records
//! it in the cell's mailbox and takes the cell if nobody holds it, then drives the connection's
//! state machine (`conn/`) on what the connection wants now. A thread that finds the cell held
//! leaves the event there: the holder looks at the mailbox after letting go and goes round for an
//! event the connection wants (`mailbox.rs`, proven by its loom models). An event the connection
//! does not want yet (input while its request is in flight) stays in the cell until it does: the
//! thread that answers the request reads it then. So at most one thread touches a connection at a
//! time, nothing is read while its request is in flight, and a kept-alive request costs no
//! `epoll_ctl`: the set changes only when a write waits for room (`EPOLLOUT` added, then removed).
//!
//! Who takes events:
//! - an idle worker (the pool's sleeper): the request it reads is lent back to it by the pool
//!   (`pool::idle_wait::lend::resting_worker`) and it runs it next;
//! - the reactor, only when no worker does (it takes the lane over, [`Lane::take_over`]): when
//!   every worker is busy and none has taken an event since the reactor last looked
//!   ([`TAKE_OVER_BUSY`]), the reactor takes the waiting events itself and hands the requests on
//!   as before (the pool's queue, or a spare thread for a self-call, the health routes, the 503
//!   of a full queue). A handler that calls its own server while every worker is busy is served
//!   this way, a few milliseconds later;
//! - the reactor, always, when no pool waits here (a dispatcher without workers).
//!
//! A worker that waits in the set while no other does takes up to `BATCH` events in one
//! `epoll_wait`: it acts on the first and leaves the rest in the lane's ready queue, which every
//! thread that would wait looks at first (a busy server's workers come back to a queue of
//! connections to serve, one system call for several requests). Events are left there only for
//! threads that will come: a worker waiting in the set when they are left is woken to take them
//! (the wake-up eventfd), a worker about to wait sees them (the pairing in `ready.rs`, proven by
//! its loom model), and the reactor's take-over takes them when every worker stays busy. While
//! another worker waits in the set, a wait takes one event, and the set hands the others to the
//! waiters itself.
//!
//! Answers come back through the cell (the lane's out-stage, `answer.rs`: the cell's
//! [`AnswerBack`]): the answering thread writes the answer, leaves the [`Answer`] (what is left of
//! it to write) in the cell's answer slot, and takes the cell if nobody holds it; a thread that
//! held it looks at the slot again after letting go.
//!
//! `LANE.md` beside this file tells the whole protocol (the lane, the pool's lend, the reactor's
//! take-over, merged wake-ups, the stop) as named scenarios.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::RwLock;

use crate::http::engine::acceptor::AcceptPolicy;
use crate::http::engine::conn::{Conn, Env, Next};
use crate::http::engine::epoll::{Epoll, EventFd, Ready, IN, OUT};
use crate::http::engine::handoff::{Answer, AnswerBack, Handoff};
use crate::http::engine::mailbox::{Mailbox, Step};
use crate::http::engine::ready::{ReadyQueue, TOOK, WAITER};
use crate::pool::Sleeper;
use crate::sync::AtomicU64;

/// How often the reactor checks that someone takes the lane's events while no worker waited
/// there at its last look (see [`Lane::take_over`]).
pub(crate) const TAKE_OVER_BUSY: Duration = Duration::from_millis(2);
/// How often it checks while a worker waited there at its last look: a request that comes when
/// every worker has just become busy waits at most this long for the reactor (a self-call on a
/// kept-alive connection while every worker is busy), and an idle server with open connections
/// wakes 50 times a second, not 500.
pub(crate) const TAKE_OVER_IDLE: Duration = Duration::from_millis(20);
/// The longest a worker waits in the lane before it looks at the pool's queue anyway (a safety
/// net: every queued job wakes one waiter).
const WORKER_WAIT: Duration = Duration::from_millis(250);
/// The event data of the wake-up eventfd.
const WAKE: u64 = u64::MAX;
/// The most events a worker's wait takes from the set at once: it acts on the first and leaves
/// the rest in the lane's ready queue, where the next thread that would wait takes them without a
/// system call.
const BATCH: usize = 16;

/// An event's bits in the cell's mailbox: readable.
const EV_READ: u32 = 1;
/// The client shut its side (or an error): read to the end.
const EV_CLOSED: u32 = 2;
/// Writable.
const EV_WRITE: u32 = 4;

/// The events a connection that waits for `interest` (`IN`, `OUT`, 0 while in flight) acts on.
fn wanted(interest: u32) -> u32 {
    if interest == IN {
        EV_READ | EV_CLOSED
    } else if interest == OUT {
        EV_WRITE
    } else {
        0
    }
}

/// One connection of the lane: the state machine, and the slot for its answer.
pub(crate) struct ConnCell {
    key: u64,
    fd: RawFd,
    /// The connection (taken out when closed), the slot for an answer that came while another
    /// thread held it, and the events that came meanwhile (that thread takes them when it lets
    /// go): `mailbox.rs`.
    pub(super) held: Mailbox<Conn, Answer>,
    /// What the connection waits for now (`IN`, `OUT`; 0: nothing, its request is in flight).
    armed: AtomicU64,
    /// Whether the epoll set watches it for room to write too (changed under the cell only).
    watch_out: AtomicBool,
    lane: Weak<Lane>,
    /// The cell itself, as the way back for its connection's requests (`Env::back`): upgraded
    /// when a request is handed on, with no call through a trait object.
    back: Weak<dyn AnswerBack>,
    /// The tests' record of each change of the epoll set's watch: whether the cell was free then.
    #[cfg(test)]
    arms: parking_lot::Mutex<Vec<bool>>,
}

impl std::fmt::Debug for ConnCell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnCell").field("key", &self.key).finish()
    }
}

#[derive(Default)]
struct Slab {
    cells: Vec<Option<Arc<ConnCell>>>,
    free: Vec<u32>,
    gens: Vec<u32>,
}

/// The lane: the shared epoll set and the connections in it.
pub(crate) struct Lane {
    epoll: Epoll,
    wake: EventFd,
    slab: RwLock<Slab>,
    live: AtomicUsize,
    /// Workers blocked in the lane now (units of [`WAITER`]) and the events they took so far
    /// (units of [`TOOK`]: the reactor's progress check), in one word: a worker's wait changes
    /// it twice (in; out with or without an event), not three times.
    progress: AtomicU64,
    /// The pool's workers wait here (its sleeper is installed).
    attached: AtomicBool,
    /// The server has stopped: waiting workers go back to the pool's queue.
    released: AtomicBool,
    /// Process mode's accept gate, which caps the requests a connection is kept alive for.
    gate: std::sync::OnceLock<Arc<dyn AcceptPolicy>>,
    /// Events a worker's wait took beyond the one it acts on (`BATCH`): every thread that
    /// would wait in the set takes one from here first (`ready.rs`).
    ready: ReadyQueue,
}

impl Lane {
    pub(crate) fn new() -> std::io::Result<Arc<Lane>> {
        let epoll = Epoll::new()?;
        let wake = EventFd::new()?;
        epoll.add_edge(wake.raw_fd(), IN, WAKE)?;
        Ok(Arc::new(Lane {
            epoll,
            wake,
            slab: RwLock::new(Slab::default()),
            live: AtomicUsize::new(0),
            progress: AtomicU64::new(0),
            attached: AtomicBool::new(false),
            released: AtomicBool::new(false),
            gate: std::sync::OnceLock::new(),
            ready: ReadyQueue::new(),
        }))
    }

    /// The epoll set's descriptor (the reactor polls it while no worker waits here).
    pub(crate) fn raw_fd(&self) -> RawFd {
        self.epoll.raw_fd()
    }

    /// Connections open now.
    pub(crate) fn live(&self) -> usize {
        self.live.load(Ordering::SeqCst)
    }

    /// Process mode: the gate that caps the requests per connection (set once, before serving).
    pub(crate) fn set_gate(&self, gate: Arc<dyn AcceptPolicy>) {
        let _ = self.gate.set(gate);
    }

    /// Whether the pool's workers wait here.
    pub(crate) fn attached(&self) -> bool {
        self.attached.load(Ordering::SeqCst)
    }

    pub(crate) fn set_attached(&self, on: bool) {
        self.attached.store(on, Ordering::SeqCst);
    }

    /// Add a connection (nothing of it read yet) and watch it for input.
    pub(crate) fn insert(self: &Arc<Self>, fd: RawFd, conn: Conn) -> Option<Arc<ConnCell>> {
        let cell = {
            let mut slab = self.slab.write();
            let idx = match slab.free.pop() {
                Some(i) => i as usize,
                None => {
                    slab.cells.push(None);
                    slab.gens.push(0);
                    slab.cells.len() - 1
                }
            };
            slab.gens[idx] = slab.gens[idx].wrapping_add(1);
            let key = (u64::from(slab.gens[idx]) << 32) | idx as u64;
            let cell = Arc::new_cyclic(|me: &Weak<ConnCell>| ConnCell {
                key,
                fd,
                held: Mailbox::new(conn, wanted(IN)),
                armed: AtomicU64::new(u64::from(IN)),
                watch_out: AtomicBool::new(false),
                lane: Arc::downgrade(self),
                back: me.clone(),
                #[cfg(test)]
                arms: parking_lot::Mutex::new(Vec::new()),
            });
            slab.cells[idx] = Some(cell.clone());
            cell
        };
        // Counted before it is watched: a worker may read, answer and close it at once.
        self.live.fetch_add(1, Ordering::SeqCst);
        if let Err(e) = self.epoll.add_edge(fd, IN, cell.key) {
            log::warn!(target: "prefork_pool::http", "cannot watch a connection: {e}");
            self.live.fetch_sub(1, Ordering::SeqCst);
            self.forget(&cell);
            return None;
        }
        Some(cell)
    }

    fn forget(&self, cell: &ConnCell) {
        let idx = (cell.key & 0xffff_ffff) as usize;
        let mut slab = self.slab.write();
        if slab.cells.get(idx).and_then(|c| c.as_ref()).map(|c| c.key) == Some(cell.key) {
            slab.cells[idx] = None;
            slab.free.push(idx as u32);
        }
    }

    fn cell(&self, key: u64) -> Option<Arc<ConnCell>> {
        let idx = (key & 0xffff_ffff) as usize;
        let slab = self.slab.read();
        slab.cells
            .get(idx)?
            .as_ref()
            .filter(|c| c.key == key)
            .cloned()
    }

    /// Every connection now (a snapshot).
    pub(crate) fn cells(&self) -> Vec<Arc<ConnCell>> {
        self.slab.read().cells.iter().flatten().cloned().collect()
    }

    /// Wake one worker waiting here.
    pub(crate) fn wake_one(&self) {
        self.wake.signal();
    }

    /// The server has stopped: every worker waiting here goes back to the pool's queue, now and
    /// from now on.
    pub(crate) fn release(&self) {
        self.released.store(true, Ordering::SeqCst);
        self.attached.store(false, Ordering::SeqCst);
        // Level-triggered and never cleared: every waiter, now and later, returns at once.
        let _ = self.epoll.modify_level(self.wake.raw_fd(), IN, WAKE);
        self.wake.signal();
    }

    /// One event: record it in its connection's cell, and drive the connection on this thread
    /// if nobody holds it (the holder takes the event after letting go otherwise).
    fn handle(&self, handoff: &Arc<Handoff>, ev: Ready, now: Instant) {
        let Some(cell) = self.cell(ev.data) else {
            return;
        };
        let bits = if ev.readable { EV_READ } else { 0 }
            | if ev.read_closed { EV_CLOSED } else { 0 }
            | if ev.writable { EV_WRITE } else { 0 };
        cell.held.signal(bits);
        cell.drive(Some(self), handoff, now, false, |_, _| Next::Keep);
    }

    /// The reactor's look at the lane: when no worker waits here and none has taken an event
    /// since the last look (`seen`: the count then), take the waiting events on this thread, so
    /// that a request is never left unread while every worker is busy (a handler waiting on a
    /// call to its own server). Returns the count to pass next time, and whether a worker waited.
    pub(crate) fn take_over(&self, handoff: &Arc<Handoff>, seen: u64, now: Instant) -> (u64, bool) {
        let (taken, waiting) = self.progress();
        if self.attached() && (taken != seen || waiting) {
            return (taken, waiting);
        }
        self.drain_events(handoff, now);
        (self.progress().0, false)
    }

    /// The events the workers took so far, and whether a worker waits in the lane now.
    fn progress(&self) -> (u64, bool) {
        let p = self.progress.load(Ordering::SeqCst);
        (p / TOOK, p % TOOK > 0)
    }

    /// Count `n` events a wait put in the ready queue for the next threads that would wait
    /// (`ReadyQueue::lock`), and wake one that waits in the set now (`ready.rs`).
    fn leave_ready(&self, n: usize) {
        if self.ready.publish(n, &self.progress) {
            self.wake.signal();
        }
    }

    /// Take every waiting event on this thread.
    pub(crate) fn drain_events(&self, handoff: &Arc<Handoff>, now: Instant) {
        while let Some(ev) = self.ready.take() {
            self.handle(handoff, ev, now);
        }
        for _ in 0..64 {
            let mut got = 0;
            let mut woke = false;
            let _ = self.epoll.wait(64, Some(Duration::ZERO), |ev| {
                got += 1;
                if ev.data == WAKE {
                    woke = true;
                } else {
                    self.handle(handoff, ev, now);
                }
            });
            if woke && self.attached() {
                // It was meant for a worker about to wait here: pass it on.
                self.wake.signal();
            }
            if got < 64 {
                return;
            }
        }
    }

    /// Watch `cell`'s connection for room to write too (`out`), or for input only (edge-triggered
    /// both: an event comes at once if it is ready now). Called holding the cell.
    fn watch(&self, cell: &ConnCell, out: bool) {
        #[cfg(test)]
        {
            let free = cell.held.peek(|_| ()).is_some();
            cell.arms.lock().push(free);
        }
        cell.watch_out.store(out, Ordering::Relaxed);
        let interest = if out { IN | OUT } else { IN };
        if let Err(e) = self.epoll.modify_edge(cell.fd, interest, cell.key) {
            log::debug!(target: "prefork_pool::http", "cannot watch a connection for writing: {e}");
        }
    }

    /// Close a connection taken out of its cell.
    fn close(&self, handoff: &Handoff, cell: &ConnCell, conn: Conn) {
        let fd = conn.link.stream.raw_fd();
        // Closing the socket takes it out of the epoll set; an answer still under way holds it
        // open (its `Link`), so only then is it taken out here, before the cell is forgotten.
        if Arc::strong_count(&conn.link) > 1 {
            self.epoll.remove(fd);
        }
        handoff.lookup.owned.remove(fd);
        drop(conn);
        self.forget(cell);
        let left = self.live.fetch_sub(1, Ordering::SeqCst) - 1;
        if let Some(gate) = self.gate.get() {
            gate.conn_closed(left);
        }
        handoff.metrics.closed();
        if handoff.draining.load(Ordering::SeqCst) {
            handoff.wake_reactor();
        }
    }
}

impl ConnCell {
    /// A pass of the reactor's over the connection (a timer, the drain, the stop): run `f` on it
    /// (if it is still open), act on an answer or an event that came meanwhile, close it or leave
    /// it waiting for what it waits for next. `wait`: block for the cell; otherwise give up when
    /// another thread holds it (that one will see the answer and the events).
    pub(crate) fn with(
        self: &Arc<Self>,
        handoff: &Arc<Handoff>,
        now: Instant,
        wait: bool,
        f: impl FnOnce(&mut Conn, &mut Env<'_>) -> Next,
    ) {
        self.drive(None, handoff, now, wait, f);
    }

    /// Run `f` on the connection, then what the mailbox holds (an answer, the events the
    /// connection wants), holding the cell; `wait`: block for the cell, else give up when another
    /// thread holds it (that thread sees the mailbox after letting go). Returns whether `f` ran.
    /// `lane`: the cell's lane, when the caller has it at hand.
    pub(super) fn drive(
        self: &Arc<Self>,
        lane: Option<&Lane>,
        handoff: &Arc<Handoff>,
        now: Instant,
        wait: bool,
        f: impl FnOnce(&mut Conn, &mut Env<'_>) -> Next,
    ) -> bool {
        let upgraded;
        let lane = match lane {
            Some(lane) => lane,
            None => match self.lane.upgrade() {
                Some(lane) => {
                    upgraded = lane;
                    &*upgraded
                }
                None => return false,
            },
        };
        let mut ran = false;
        let mut f = Some(f);
        let mut closed = None;
        self.held.visit(wait, |held| {
            let Some(conn) = held.as_mut() else {
                return Step::Stop;
            };
            let mut env = Env {
                handoff,
                back: &self.back,
                draining: handoff.draining.load(Ordering::SeqCst),
                keepalive_requests: lane.gate.get().and_then(|g| g.keepalive_requests()),
                now,
            };
            let mut next = match f.take() {
                Some(f) => {
                    ran = true;
                    f(conn, &mut env)
                }
                None => Next::Keep,
            };
            loop {
                while next == Next::Keep {
                    let Some(answer) = self.held.take_mail() else {
                        break;
                    };
                    next = conn.on_answer(answer, &mut env);
                }
                if next == Next::Close {
                    closed = held.take();
                    return Step::Stop;
                }
                let want = conn.interest().unwrap_or(0);
                self.armed.store(u64::from(want), Ordering::Relaxed);
                // Room to write is watched only while a write waits for it (an event for every
                // ACK or every read of the client's otherwise).
                let out = want == OUT;
                if want != 0 && out != self.watch_out.load(Ordering::Relaxed) {
                    lane.watch(self, out);
                }
                // Events that came (to this thread, or to one that found the cell held) and that
                // the connection wants now: act on them before letting go.
                let events = self.held.settle(wanted(want));
                if events == 0 {
                    return Step::LetGo;
                }
                next = conn.on_ready(
                    events & EV_READ != 0,
                    events & EV_CLOSED != 0,
                    events & EV_WRITE != 0,
                    &mut env,
                );
            }
        });
        if let Some(conn) = closed {
            lane.close(handoff, self, conn);
        }
        ran
    }

    /// Close the connection now (the server stops): what the client sent is read and dropped.
    pub(crate) fn shut(&self, handoff: &Handoff) {
        let conn = self.held.take();
        if let (Some(mut conn), Some(lane)) = (conn, self.lane.upgrade()) {
            conn.discard_input();
            lane.close(handoff, self, conn);
        }
    }

    /// Whether the connection has a request under way (or is busy on another thread now).
    pub(crate) fn active(self: &Arc<Self>, handoff: &Arc<Handoff>, now: Instant) -> bool {
        self.peek(handoff, now, |conn| conn.is_some_and(|c| !c.is_lingering()))
            .unwrap_or(true)
    }

    /// The connection's timer is due (without waiting for the cell).
    pub(crate) fn due(self: &Arc<Self>, handoff: &Arc<Handoff>, now: Instant) -> bool {
        self.peek(handoff, now, |conn| {
            conn.is_some_and(|c| c.deadline.is_some_and(|d| d <= now))
        })
        .unwrap_or(false)
    }

    /// `f` on the connection if nobody holds the cell now. The peek holds the cell like any
    /// thread: an answer or an event that came meanwhile found it held and was left in the
    /// mailbox, so it is acted on here after letting go (`Mailbox::peek`).
    fn peek<R>(
        self: &Arc<Self>,
        handoff: &Arc<Handoff>,
        now: Instant,
        f: impl FnOnce(Option<&Conn>) -> R,
    ) -> Option<R> {
        let (r, pending) = self.held.peek(f)?;
        if pending {
            self.drive(None, handoff, now, false, |_, _| Next::Keep);
        }
        Some(r)
    }
}

/// The pool's sleeper: an idle worker waits on the lane's connections.
pub(crate) struct LaneSleeper {
    pub lane: Arc<Lane>,
    pub handoff: Weak<Handoff>,
}

impl Sleeper for LaneSleeper {
    fn sleep(&self) {
        let lane = &self.lane;
        if lane.released.load(Ordering::SeqCst) {
            return;
        }
        let Some(handoff) = self.handoff.upgrade() else {
            return;
        };
        let (others, left) = lane.ready.enter(&lane.progress);
        // An event another worker's wait left first: no system call.
        if let Some(ev) = left {
            lane.progress.fetch_add(TOOK - WAITER, Ordering::SeqCst);
            if lane.ready.pass_on(&lane.progress) {
                // More are left and another worker waits in the set: pass the wake-up on.
                lane.wake.signal();
            }
            lane.handle(&handoff, ev, Instant::now());
            return;
        }
        let mut first = None;
        // The events beyond the first, put in the ready queue as they come (its lock taken at
        // the second event, if any, and held to the end of the wait's list), counted there below.
        let mut stash = None;
        let mut stashed = 0;
        let mut woke = false;
        // A batch only while no other worker waits in the set: the set hands each event to a
        // waiting thread itself, with no hand-on.
        let max = if others == 0 { BATCH } else { 1 };
        let _ = lane.epoll.wait(max, Some(WORKER_WAIT), |ev| {
            if ev.data == WAKE {
                woke = true;
            } else if first.is_none() {
                first = Some(ev);
            } else {
                stash.get_or_insert_with(|| lane.ready.lock()).push_back(ev);
                stashed += 1;
            }
        });
        drop(stash);
        match first {
            Some(ev) if !woke => {
                // Out of the wait and one more event taken, in one change.
                lane.progress.fetch_add(TOOK - WAITER, Ordering::SeqCst);
                lane.leave_ready(stashed);
                lane.handle(&handoff, ev, Instant::now());
            }
            _ => {
                // Woken (a job in the pool's queue, or events left by another worker), or
                // nothing came: the caller looks at the pool's queue, then waits here again;
                // what this wait took is left for the next waiter.
                lane.progress.fetch_sub(WAITER, Ordering::SeqCst);
                if let Some(ev) = first {
                    lane.ready.lock().push_back(ev);
                    stashed += 1;
                }
                lane.leave_ready(stashed);
            }
        }
    }

    fn wake(&self) {
        self.lane.wake_one();
    }
}

#[cfg(test)]
#[path = "lane_tests.rs"]
mod tests;
