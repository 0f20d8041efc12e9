//! The 504 from outside the runtime: a request past its deadline whose handler blocks the
//! runtime thread it runs on (and so its own deadline timer, the one that would answer 504) is
//! answered by the lifeline thread, straight on the connection's socket, when nothing of its
//! answer has been written yet; the connection is then fenced off: the runtime never writes to it
//! again, and it is shut down.
//!
//! The fence is one atomic word per connection, shared by the runtime's writes (`Counted`'s
//! `poll_write`, in `conn.rs`) and the lifeline: whoever holds its busy bit owns the socket for one write, the
//! lifeline takes it only between two runtime writes and only when the runtime has written
//! nothing since the request began, and marks it taken for good. The socket's descriptor stays
//! open while the lifeline writes (the connection's drop waits for the busy bit).
//!
//! HTTP/1.1 only: an HTTP/2 stream shares its connection with others, framed and flow-controlled
//! by hyper's state on the runtime; it cannot be answered from outside, so a blocked h2 request
//! gets no 504 (its process is still replaced `request_grace` after the deadline).
//!
//! The watch holds every request under way (HTTP/2 ones too), and the lifeline publishes the one
//! furthest past its deadline in the heartbeat at each look: the master replaces the process
//! once it is `request_grace` late. The request path only counts the request in the heartbeat
//! (atomics) and takes a slot of the watch.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::header::{HeaderMap, HeaderValue, CONNECTION, CONTENT_TYPE};
use parking_lot::Mutex;

use super::line::RequestLine;
use crate::http::ops::access_log::{write_line, AccessLogFormat, LogRequest};
use crate::http::ops::metrics::HttpCounters;
use crate::http::wire::date::{http_date, now_secs};
use crate::prefork::workers::heartbeat::Heartbeat;

/// The lifeline's answer is written after the deadline plus this, so that a runtime whose timer
/// can run answers first (its 504 removes the request from the watch before then).
pub(super) const MARGIN: Duration = Duration::from_millis(250);
/// The body of the server's 504 (the runtime's and the lifeline's alike).
pub(super) const TIMEOUT_TEXT: &str = "gateway timeout\n";
/// How long the lifeline may wait for room in the socket's send buffer for its answer.
const WRITE_WAIT: Duration = Duration::from_secs(1);

/// The lifeline answered on this connection: the runtime must never write to it again.
const TAKEN: u64 = 1 << 63;
/// A write (the runtime's or the lifeline's) is under way.
const BUSY: u64 = 1 << 62;
/// The connection is dropped (its descriptor about to be closed): the lifeline keeps off.
const CLOSED: u64 = 1 << 61;
/// The low bits: bytes the runtime wrote on the connection so far.
const COUNT: u64 = CLOSED - 1;

/// One connection's fence: its descriptor and who may write on it (see the module's doc).
pub(super) struct Fence {
    fd: RawFd,
    state: AtomicU64,
}

/// A runtime write let through the fence: hand it back with [`Fence::end`].
pub(super) struct Pass(u64);

impl Fence {
    pub(super) fn new(fd: RawFd) -> Fence {
        Fence {
            fd,
            state: AtomicU64::new(0),
        }
    }

    /// Bytes the runtime wrote on the connection so far.
    pub(super) fn written(&self) -> u64 {
        self.state.load(Ordering::Acquire) & COUNT
    }

    /// A runtime write may go ahead (`None`: the lifeline answered on this connection; the write
    /// fails). Never waits on the lifeline: it sets `TAKEN` with its busy bit.
    pub(super) fn begin(&self) -> Option<Pass> {
        let mut s = self.state.load(Ordering::Acquire);
        loop {
            if s & TAKEN != 0 {
                return None;
            }
            match self
                .state
                .compare_exchange_weak(s, s | BUSY, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Some(Pass(s)),
                Err(now) => s = now,
            }
        }
    }

    /// The runtime's write of `n` bytes is done.
    pub(super) fn end(&self, pass: Pass, n: usize) {
        // Only the holder of the busy bit changes the word (the lifeline's exchange fails
        // while it is set).
        let count = ((pass.0 & COUNT) + n as u64) & COUNT;
        self.state.store(count, Ordering::Release);
    }

    /// The connection is being dropped: waits for a lifeline write under way, then keeps the
    /// lifeline off for good (its descriptor is closed next).
    pub(super) fn close(&self) {
        let mut s = self.state.load(Ordering::Acquire);
        loop {
            if s & BUSY != 0 {
                // The lifeline is writing its answer (bounded by `WRITE_WAIT`).
                std::thread::sleep(Duration::from_millis(1));
                s = self.state.load(Ordering::Acquire);
                continue;
            }
            match self.state.compare_exchange_weak(
                s,
                s | CLOSED,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return,
                Err(now) => s = now,
            }
        }
    }

    /// The lifeline takes the connection when the runtime is not writing and has written
    /// nothing since `since` bytes (the request's start): `true` then, and the runtime's writes
    /// fail from now on.
    fn take(&self, since: u64) -> bool {
        let s = since & COUNT;
        self.state
            .compare_exchange(s, s | TAKEN | BUSY, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Writes `bytes` (within [`WRITE_WAIT`]), then shuts the socket down; the busy bit taken by
    /// [`take`](Self::take) is let go. Whether the whole answer went out.
    fn answer(&self, bytes: &[u8]) -> bool {
        let end = Instant::now() + WRITE_WAIT;
        let mut at = 0;
        while at < bytes.len() {
            let rest = &bytes[at..];
            // SAFETY: `fd` is the connection's socket, open while the busy bit is held (the
            // connection's drop waits for it in `close`); `rest` is a valid buffer of its length.
            let n = unsafe {
                libc::send(
                    self.fd,
                    rest.as_ptr().cast(),
                    rest.len(),
                    libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
                )
            };
            if n > 0 {
                at += n as usize;
                continue;
            }
            let err = std::io::Error::last_os_error();
            let left = end.saturating_duration_since(Instant::now());
            if n == 0 || err.kind() != std::io::ErrorKind::WouldBlock || left.is_zero() {
                break;
            }
            let mut pfd = libc::pollfd {
                fd: self.fd,
                events: libc::POLLOUT,
                revents: 0,
            };
            // SAFETY: one valid `pollfd` for an open descriptor (as above).
            unsafe { libc::poll(&mut pfd, 1, left.as_millis().max(1) as i32) };
        }
        // SAFETY: as above; a shutdown of an open socket.
        unsafe { libc::shutdown(self.fd, libc::SHUT_RDWR) };
        self.state.fetch_and(!BUSY, Ordering::AcqRel);
        at == bytes.len()
    }
}

/// A request the lifeline watches: every request handed to the service, until the service
/// answers (or its future is dropped). The lifeline publishes the one furthest past its deadline
/// in the heartbeat (the master replaces the process once it is `request_grace` late), and
/// answers 504 to an HTTP/1.1 one blocked past it.
pub(super) struct Watched {
    pub deadline: Instant,
    pub budget: Duration,
    pub line: RequestLine,
    pub method: u8,
    pub started: Instant,
    /// What the lifeline needs to answer it (HTTP/1.1; `None`: HTTP/2).
    pub reply: Option<Reply>,
}

/// An HTTP/1.1 request's connection and log, for the lifeline's 504.
pub(super) struct Reply {
    pub fence: Arc<Fence>,
    /// The fence's count at the request's start.
    pub since: u64,
    /// The access log's view of the request (the line is written by whoever answers).
    pub log: Option<Box<LogRequest>>,
    pub peer: Arc<str>,
}

/// The requests a worker process's lifeline watches: a slot each, reused once free (no hashing,
/// no allocation once the slots of the busiest moment exist), in the shard of the runtime thread
/// that took it: each runtime thread takes and frees its requests' slots under a lock of its own
/// (the lifeline's look and a task moved to another thread take it too), not one that every
/// thread of the runtime passes between them at each request.
#[derive(Default)]
pub(super) struct Watch {
    shards: [Shard; SHARDS],
}

/// A watch's shards: the runtime threads take one each, by their turn (more threads share).
const SHARDS: usize = 8;

/// One shard of a [`Watch`], on cache lines of its own.
#[derive(Default)]
#[repr(align(128))]
struct Shard {
    slots: Mutex<Slots>,
}

/// This thread's shard of a watch (the threads' turns, modulo [`SHARDS`]).
fn this_threads_shard() -> usize {
    use std::cell::Cell;
    use std::sync::atomic::AtomicUsize;
    static TURNS: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    SHARD.with(|shard| {
        if shard.get() == usize::MAX {
            shard.set(TURNS.fetch_add(1, Ordering::Relaxed) % SHARDS);
        }
        shard.get()
    })
}

#[derive(Default)]
struct Slots {
    all: Vec<Option<Entry>>,
    free: Vec<usize>,
}

struct Entry {
    watched: Watched,
    /// The lifeline answered it (its `reply` taken): it still runs, and is still published.
    answered: bool,
}

impl Watch {
    /// The line of the running request with the earliest deadline ("" when none runs).
    pub(super) fn oldest_line(&self) -> String {
        let oldest = self.shards.iter().filter_map(|shard| {
            let slots = shard.slots.lock();
            let oldest = slots
                .all
                .iter()
                .flatten()
                .min_by_key(|e| e.watched.deadline);
            oldest.map(|e| (e.watched.deadline, e.watched.line.clone()))
        });
        let oldest = oldest.min_by_key(|(deadline, _)| *deadline);
        oldest.map_or_else(String::new, |(_, line)| line.to_string())
    }

    /// Publishes in `heartbeat` the request furthest past its deadline at `now`, or none (see
    /// [`Heartbeat::publish_overdue`]).
    fn publish(&self, heartbeat: &Heartbeat, now: Instant) {
        let late = self.shards.iter().filter_map(|shard| {
            let slots = shard.slots.lock();
            let late = slots.all.iter().flatten().map(|e| &e.watched);
            let late = late
                .filter(|w| w.deadline <= now)
                .min_by_key(|w| w.deadline);
            late.map(|w| (w.deadline, w.line.clone()))
        });
        let late = late.min_by_key(|(deadline, _)| *deadline);
        let late = late.map(|(deadline, line)| (deadline, line.to_string()));
        heartbeat.publish_late(late.as_ref().map(|(d, l)| (*d, l.as_str())));
    }
}

/// A watched request: [`finish`](WatchGuard::finish) it once the service answered; dropped
/// unfinished (the connection went away), it is forgotten.
pub(super) struct WatchGuard<'a> {
    shard: &'a Shard,
    index: Option<usize>,
}

impl<'a> WatchGuard<'a> {
    pub(super) fn new(watch: &'a Watch, watched: Watched) -> WatchGuard<'a> {
        let entry = Some(Entry {
            watched,
            answered: false,
        });
        let shard = &watch.shards[this_threads_shard()];
        let mut slots = shard.slots.lock();
        let index = match slots.free.pop() {
            Some(i) => {
                slots.all[i] = entry;
                i
            }
            None => {
                slots.all.push(entry);
                slots.all.len() - 1
            }
        };
        WatchGuard {
            shard,
            index: Some(index),
        }
    }

    /// The runtime answers: the request's log back (`None` inside when the request kept it), or
    /// `None`: the lifeline answered it, and counted and logged it: the runtime must not.
    pub(super) fn finish(mut self) -> Option<Option<Box<LogRequest>>> {
        let index = self.index.take()?;
        let mut slots = self.shard.slots.lock();
        // Read in place and dropped there (the entry is not moved out).
        let entry = slots.all[index].as_mut()?;
        let back =
            (!entry.answered).then(|| entry.watched.reply.as_mut().and_then(|r| r.log.take()));
        slots.all[index] = None;
        slots.free.push(index);
        back
    }

    /// The request's line (for a log line of the runtime's own answer).
    pub(super) fn line(&self) -> Option<RequestLine> {
        let slots = self.shard.slots.lock();
        let entry = slots.all[self.index?].as_ref()?;
        Some(entry.watched.line.clone())
    }
}

impl Drop for WatchGuard<'_> {
    fn drop(&mut self) {
        if let Some(index) = self.index {
            let mut slots = self.shard.slots.lock();
            slots.all[index] = None;
            slots.free.push(index);
        }
    }
}

/// What the lifeline answers: a request taken by [`sweep`].
struct Due {
    line: RequestLine,
    budget: Duration,
    method: u8,
    started: Instant,
    reply: Reply,
}

/// Answers 504, from the lifeline, every watched HTTP/1.1 request `MARGIN` past its deadline
/// whose connection the runtime wrote nothing on since it began, counted in `counters` and logged
/// in `access_log` as the runtime's 504 is; publishes in `heartbeat` the request furthest past
/// its deadline; `stalled`: every runtime thread is blocked (for the log).
pub(super) fn sweep(
    watch: &Watch,
    heartbeat: &Heartbeat,
    counters: &HttpCounters,
    access_log: Option<&AccessLogFormat>,
    stalled: bool,
) {
    let now = Instant::now();
    let mut due = Vec::new();
    for shard in &watch.shards {
        let mut slots = shard.slots.lock();
        for e in slots.all.iter_mut().flatten() {
            let w = &mut e.watched;
            let Some(reply) = &w.reply else { continue };
            if now < w.deadline + MARGIN || !reply.fence.take(reply.since) {
                continue;
            }
            if let Some(reply) = w.reply.take() {
                e.answered = true;
                due.push(Due {
                    line: w.line.clone(),
                    budget: w.budget,
                    method: w.method,
                    started: w.started,
                    reply,
                });
            }
        }
    }
    // Before the answers (each may wait for the client), and again after them.
    watch.publish(heartbeat, now);
    if due.is_empty() {
        return;
    }
    for d in due {
        answer(counters, access_log, d, stalled);
    }
    watch.publish(heartbeat, Instant::now());
}

/// The 504 of a request taken by [`sweep`]: written, logged, counted as the runtime's would be.
fn answer(counters: &HttpCounters, access_log: Option<&AccessLogFormat>, w: Due, stalled: bool) {
    let text = TIMEOUT_TEXT;
    let raw = format!(
        "HTTP/1.1 504 Gateway Timeout\r\ncontent-type: text/plain\r\nconnection: close\r\n\
         content-length: {}\r\ndate: {}\r\n\r\n{text}",
        text.len(),
        http_date(now_secs())
    );
    let sent = w.reply.fence.answer(raw.as_bytes());
    let blocked = if stalled {
        "every runtime thread of this worker"
    } else {
        "the runtime thread running it"
    };
    log::error!(
        "{}: no answer within its deadline of {:?} and {blocked} (pid {}) is blocked, so the \
         runtime could not answer it: {} from outside the runtime and closed the connection. A \
         synchronous call on the runtime (std::thread::sleep, reqwest::blocking, ureq, a sync \
         SDK, a lock held long) blocks it; the fix: an async client, or the blocking call through \
         tokio::task::spawn_blocking or a Pool (`pool.submit(req).await`). The worker is replaced \
         if the request is still running `request_grace` after its deadline.",
        w.line,
        w.budget,
        std::process::id(),
        if sent {
            "answered 504"
        } else {
            "the 504 could not be written (the client is gone or does not read)"
        }
    );
    let took = w.started.elapsed();
    counters.own_answer(504);
    counters.answered(w.method, 504, text.len(), took);
    if let (Some(fmt), Some(log)) = (access_log, w.reply.log.as_ref()) {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        headers.insert(CONNECTION, HeaderValue::from_static("close"));
        write_line(fmt, &w.reply.peer, log, 504, &headers, text.len(), took);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prefork::workers::heartbeat::HeartbeatTable;

    fn watched(line: &str, deadline: Instant) -> Watched {
        let req = hyper::Request::get(line).body(()).unwrap();
        Watched {
            deadline,
            budget: Duration::from_secs(1),
            line: RequestLine::of(&req),
            method: 0,
            started: Instant::now(),
            reply: None,
        }
    }

    #[test]
    fn the_master_sees_the_request_furthest_past_its_deadline_while_it_runs() {
        let table = HeartbeatTable::new(1).unwrap();
        let hb = Heartbeat::new(table.leak_slot(0));
        let counters = hb.slot().metrics();
        let watch = Watch::default();
        let now = Instant::now();
        let later = WatchGuard::new(&watch, watched("/later", now + Duration::from_secs(60)));
        let late = WatchGuard::new(&watch, watched("/late", now - Duration::from_secs(2)));
        let later_still = WatchGuard::new(&watch, watched("/lately", now - Duration::from_secs(1)));
        // The oldest running request, for the lifeline's log, whether or not it is late.
        assert_eq!(watch.oldest_line(), "GET /late HTTP/1.1");
        sweep(&watch, &hb, counters, None, false);
        assert_eq!(hb.slot().request_line(), "GET /late HTTP/1.1");
        assert!(hb.slot().deadline_ms() > 0);
        // A request ended: the next sweep shows the next late one; none late: none.
        assert!(matches!(late.finish(), Some(None)));
        sweep(&watch, &hb, counters, None, false);
        assert_eq!(hb.slot().request_line(), "GET /lately HTTP/1.1");
        drop(later_still);
        sweep(&watch, &hb, counters, None, false);
        assert_eq!(hb.slot().deadline_ms(), 0);
        // A freed slot is reused; the one still running is kept.
        let again = WatchGuard::new(&watch, watched("/again", now + Duration::from_secs(1)));
        let slots = watch.shards.iter().map(|s| s.slots.lock().all.len());
        assert_eq!(slots.sum::<usize>(), 3);
        assert_eq!(watch.oldest_line(), "GET /again HTTP/1.1");
        drop((again, later));
        assert_eq!(watch.oldest_line(), "");
    }
}
