//! The heartbeat table: one shared anonymous mapping, made by the master before its first fork, with a
//! slot per worker process.
//!
//! A worker writes into its own slot (its heartbeat, its ready flag, the deadline and request line of
//! its oldest running request, its request count and its wish to retire); the master only reads it,
//! and resets a slot before it hands it to a new worker. Each slot also holds its worker's pid
//! (written by both sides at the fork, cleared by the master when it reaps the worker), which the
//! workers read to know their siblings ([`Siblings`]). Every field is an atomic, so the two
//! processes never need a lock: a lock in shared memory held by a process that dies would be held
//! for ever.
//!
//! Times are milliseconds of `CLOCK_MONOTONIC`, which is one clock for every process of the machine
//! (an [`Instant`] is the same clock on Linux, but cannot be written to memory).

use std::fs::File;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::time::{Duration, Instant};

use crate::http::HttpCounters;
use crate::pool::Record;

/// The worker called [`Heartbeat::ready`].
pub(crate) const READY: u32 = 1;
/// The worker asks to be replaced (it reached `max_requests`, or called [`Heartbeat::retire`]).
pub(crate) const RETIRE: u32 = 2;
/// The worker's app could not be built; the note holds the error.
pub(crate) const BOOT_FAILED: u32 = 4;
/// The `conns` of a worker that does not accept connections (booting, draining, not HTTP).
pub(crate) const NOT_ACCEPTING: u32 = u32::MAX;
/// The `rate` of a worker that has not measured it yet (not the bits of any finite `f64`).
const NO_RATE: u64 = u64::MAX;

const LINE: usize = 120;
const NOTE: usize = 512;

/// One worker's slot. All-zero bytes are a valid, empty slot (what `mmap` gives).
#[repr(C)]
pub(crate) struct HeartbeatSlot {
    flags: AtomicU32,
    line_seq: AtomicU32,
    /// The worker's pid (0: no worker).
    pid: AtomicU32,
    /// Requests running now (registered with `Heartbeat::track`).
    running: AtomicU32,
    /// Connections open in the worker's HTTP server; `NOT_ACCEPTING` while it does not accept.
    conns: AtomicU32,
    /// Handler threads of the worker's HTTP server (0: none, or not an HTTP worker).
    threads: AtomicU32,
    /// 1 while the worker's accept gate says no (it does not poll the listener): a sibling whose
    /// change may make it the taker wakes it through the table's gate ping.
    waiting: AtomicU32,
    beat_ms: AtomicU64,
    deadline_ms: AtomicU64,
    requests: AtomicU64,
    max_requests: AtomicU64,
    /// The worker's requests per second per open connection, as it measured them itself (`f64`
    /// bits; [`NO_RATE`]: not measured yet). One value that every sibling's accept gate reads.
    rate: AtomicU64,
    line_len: AtomicU32,
    note_len: AtomicU32,
    line: [AtomicU8; LINE],
    note: [AtomicU8; NOTE],
    /// The HTTP counters of the worker's server (process mode), folded into the table's retired
    /// totals by the master when it reaps the worker.
    metrics: HttpCounters,
}

/// The head of the mapping, before the slots: the HTTP counters of every worker reaped so far,
/// and the sequence number that lets readers sum them with the slots consistently.
#[derive(Debug)]
#[repr(C)]
pub(crate) struct TableHead {
    /// Odd while the master folds a reaped worker's counters in (a seqlock; only the master
    /// writes).
    pub(crate) seq: AtomicU64,
    /// The counters of every reaped worker.
    pub(crate) retired: HttpCounters,
}

/// The bytes before the first slot: the head, padded to a slot's alignment.
const HEAD_BYTES: usize = {
    let align = std::mem::align_of::<HeartbeatSlot>();
    std::mem::size_of::<TableHead>().div_ceil(align) * align
};

/// A new eventfd for the gate ping, non-blocking and closed on exec (a USR2 upgrade's new master
/// makes its own).
fn gate_ping() -> Option<File> {
    // SAFETY: eventfd(2) with valid flags only creates a new fd; the result is checked below.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 {
        return None;
    }
    // SAFETY: `fd` was just created by eventfd(2) above and nothing else owns it.
    Some(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// Milliseconds of `CLOCK_MONOTONIC` (shared by every process of the machine).
pub(crate) fn now_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime(2) writes one `timespec` through a valid pointer to a local; the clock id
    // is a constant every unix supports, so it cannot fail.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1000 + (ts.tv_nsec as u64) / 1_000_000
}

/// `instant` on the shared millisecond clock.
fn instant_to_ms(instant: Instant) -> u64 {
    let now = Instant::now();
    let base = now_ms();
    if instant >= now {
        base + (instant - now).as_millis() as u64
    } else {
        base.saturating_sub((now - instant).as_millis() as u64)
    }
}

fn write_bytes(dst: &[AtomicU8], len: &AtomicU32, text: &str) {
    let bytes = text.as_bytes();
    let n = bytes.len().min(dst.len());
    for (d, b) in dst.iter().zip(&bytes[..n]) {
        d.store(*b, Ordering::Relaxed);
    }
    len.store(n as u32, Ordering::Release);
}

fn read_bytes(src: &[AtomicU8], len: &AtomicU32) -> String {
    let n = (len.load(Ordering::Acquire) as usize).min(src.len());
    let bytes: Vec<u8> = src[..n].iter().map(|b| b.load(Ordering::Relaxed)).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

impl HeartbeatSlot {
    /// The HTTP counters of this slot's worker.
    pub(crate) fn metrics(&self) -> &HttpCounters {
        &self.metrics
    }

    /// Empties the slot for a new worker (master, before the fork).
    pub(crate) fn reset(&self, max_requests: u64) {
        self.flags.store(0, Ordering::Relaxed);
        self.pid.store(0, Ordering::Relaxed);
        self.line_seq.store(0, Ordering::Relaxed);
        self.beat_ms.store(now_ms(), Ordering::Relaxed);
        self.deadline_ms.store(0, Ordering::Relaxed);
        self.requests.store(0, Ordering::Relaxed);
        self.running.store(0, Ordering::Relaxed);
        self.conns.store(NOT_ACCEPTING, Ordering::Relaxed);
        self.threads.store(0, Ordering::Relaxed);
        self.waiting.store(0, Ordering::Relaxed);
        self.max_requests.store(max_requests, Ordering::Relaxed);
        self.rate.store(NO_RATE, Ordering::Relaxed);
        self.line_len.store(0, Ordering::Relaxed);
        self.note_len.store(0, Ordering::Release);
    }

    /// Requests running now in this worker.
    pub(crate) fn running(&self) -> u32 {
        self.running.load(Ordering::Acquire)
    }

    /// Connections open in this worker's HTTP server, or [`NOT_ACCEPTING`].
    pub(crate) fn conns(&self) -> u32 {
        self.conns.load(Ordering::Acquire)
    }

    /// Publishes this worker's open connections ([`NOT_ACCEPTING`]: it takes no more).
    pub(crate) fn set_conns(&self, n: u32) {
        self.conns.store(n, Ordering::Release);
    }

    /// Publishes `n` open connections, unless the worker no longer accepts (`NOT_ACCEPTING`
    /// stays: a connection closing during a drain does not make the process a taker again).
    pub(crate) fn update_conns(&self, n: u32) {
        let _ = self
            .conns
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| {
                (c != NOT_ACCEPTING).then_some(n)
            });
    }

    /// Handler threads of this worker's HTTP server.
    pub(crate) fn threads(&self) -> u32 {
        self.threads.load(Ordering::Acquire)
    }

    /// Publishes the number of handler threads of this worker's HTTP server.
    pub(crate) fn set_threads(&self, n: u32) {
        self.threads.store(n, Ordering::Release);
    }

    /// Marks the worker as waiting for its gate (it does not poll the listener) or not; returns
    /// whether it was. Sequentially consistent, with [`waiting`](Self::waiting): a worker that
    /// marks itself waiting and then reads its siblings' connections, and a sibling that publishes
    /// its connections and then reads the marks, cannot both miss the other.
    pub(crate) fn swap_waiting(&self, waiting: bool) -> bool {
        self.waiting.swap(u32::from(waiting), Ordering::SeqCst) != 0
    }

    /// Whether the worker waits for its gate (see [`swap_waiting`](Self::swap_waiting)).
    pub(crate) fn waiting(&self) -> bool {
        self.waiting.load(Ordering::SeqCst) != 0
    }

    /// The pid of the worker in this slot (0: none).
    pub(crate) fn pid(&self) -> u32 {
        self.pid.load(Ordering::Acquire)
    }

    /// Records the pid of the worker in this slot (0: the slot is free).
    pub(crate) fn set_pid(&self, pid: u32) {
        self.pid.store(pid, Ordering::Release);
    }

    pub(crate) fn flags(&self) -> u32 {
        self.flags.load(Ordering::Acquire)
    }

    pub(crate) fn set_flag(&self, flag: u32) {
        self.flags.fetch_or(flag, Ordering::Release);
    }

    /// When the worker last beat, on the shared clock.
    pub(crate) fn beat_ms(&self) -> u64 {
        self.beat_ms.load(Ordering::Acquire)
    }

    /// The deadline of the worker's oldest running request (0: none).
    pub(crate) fn deadline_ms(&self) -> u64 {
        self.deadline_ms.load(Ordering::Acquire)
    }

    /// The worker's own measure of its requests per second per connection (`None`: not yet).
    pub(crate) fn rate(&self) -> Option<f64> {
        match self.rate.load(Ordering::Acquire) {
            NO_RATE => None,
            bits => Some(f64::from_bits(bits)).filter(|r| r.is_finite()),
        }
    }

    /// Publishes this worker's requests per second per connection.
    pub(crate) fn set_rate(&self, rate: Option<f64>) {
        let bits = rate.filter(|r| r.is_finite()).map_or(NO_RATE, f64::to_bits);
        self.rate.store(bits, Ordering::Release);
    }

    pub(crate) fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// The request line of the oldest running request, read consistently (a seqlock) or, if the
    /// worker keeps rewriting it, the last try.
    pub(crate) fn request_line(&self) -> String {
        let mut line = String::new();
        for _ in 0..4 {
            let before = self.line_seq.load(Ordering::Acquire);
            line = read_bytes(&self.line, &self.line_len);
            let after = self.line_seq.load(Ordering::Acquire);
            if before == after && before % 2 == 0 {
                break;
            }
        }
        line
    }

    /// The worker's boot error, if it wrote one.
    pub(crate) fn note(&self) -> String {
        read_bytes(&self.note, &self.note_len)
    }

    pub(crate) fn set_note(&self, text: &str) {
        write_bytes(&self.note, &self.note_len, text);
    }
}

/// The shared mapping: a [`TableHead`], then `len` slots.
pub(crate) struct HeartbeatTable {
    base: NonNull<u8>,
    ptr: NonNull<HeartbeatSlot>,
    len: usize,
    /// The gate ping: an eventfd shared by every worker (inherited at the fork) that each worker's
    /// reactor polls, edge-triggered. A worker whose change may let a waiting sibling accept
    /// writes to it (see `balance.rs`). `None` where the system gives none: the gates then fall
    /// back to asking again every few milliseconds.
    ping: Option<File>,
}

impl HeartbeatTable {
    /// Maps `len` zeroed slots, shared with every process forked after this call.
    pub(crate) fn new(len: usize) -> io::Result<HeartbeatTable> {
        let bytes = Self::bytes(len);
        // SAFETY: mmap(2) of a fresh anonymous shared region: no file, no fixed address, so it cannot
        // alias any existing Rust object. The result is checked against MAP_FAILED below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(ptr.cast::<u8>()).ok_or_else(io::Error::last_os_error)?;
        // SAFETY: the mapping is `HEAD_BYTES` plus `len` slots long, so the first slot is inside it;
        // `HEAD_BYTES` is a multiple of a slot's alignment and the mapping is page aligned.
        let ptr = unsafe { NonNull::new_unchecked(ptr.cast::<u8>().add(HEAD_BYTES).cast()) };
        Ok(HeartbeatTable {
            base,
            ptr,
            len,
            ping: gate_ping(),
        })
    }

    /// A handle on the gate ping (a duplicate of its fd), for a worker's accept gate.
    pub(crate) fn gate_ping(&self) -> Option<File> {
        self.ping.as_ref().and_then(|f| f.try_clone().ok())
    }

    fn bytes(len: usize) -> usize {
        HEAD_BYTES + len * std::mem::size_of::<HeartbeatSlot>()
    }

    /// The head of the mapping.
    pub(crate) fn head(&self) -> &TableHead {
        self.leak_head()
    }

    /// The head of the mapping as a `'static` reference, for the worker side (only for a forked
    /// child, as [`leak_slot`](Self::leak_slot)).
    pub(crate) fn leak_head(&self) -> &'static TableHead {
        // SAFETY: the mapping starts with a `TableHead` (page aligned, zero-filled by the kernel:
        // all-zero is a valid `TableHead`, only atomics); every access is atomic. The `'static`
        // lifetime holds in a forked worker, which never unmaps the region (it ends with `_exit`);
        // in the master, `head` ties the borrow to `self`.
        unsafe { &*self.base.as_ptr().cast::<TableHead>() }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn slot(&self, index: usize) -> &HeartbeatSlot {
        assert!(index < self.len, "heartbeat slot {index} out of range");
        // SAFETY: `index < len`, the mapping holds `len` slots, is page aligned (so aligned for
        // `HeartbeatSlot`), zero-filled by the kernel (all-zero is a valid `HeartbeatSlot`: only atomics), and stays
        // mapped as long as `self` lives; every access goes through atomics, so sharing it with
        // other processes is sound.
        unsafe { &*self.ptr.as_ptr().add(index) }
    }

    /// Every slot as a `'static` slice, for the worker side (its [`Siblings`]).
    ///
    /// Only for a forked child, as [`leak_slot`](Self::leak_slot).
    pub(crate) fn leak_all(&self) -> &'static [HeartbeatSlot] {
        // SAFETY: the mapping holds `len` initialised slots (see `slot`); the `'static` lifetime
        // holds because the caller is a forked worker, which never unmaps this region (it ends
        // with `_exit`, never running the master's destructors).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The slot as a `'static` reference, for the worker side.
    ///
    /// Only for a forked child: the child never drops the master's `HeartbeatTable` (it ends with `_exit`), so
    /// the mapping outlives every use in that process.
    pub(crate) fn leak_slot(&self, index: usize) -> &'static HeartbeatSlot {
        assert!(index < self.len, "heartbeat slot {index} out of range");
        // SAFETY: as in `slot`; the `'static` lifetime holds because the caller is a forked worker,
        // which never unmaps this region (it never runs the master's destructors: it ends with
        // `_exit`).
        unsafe { &*self.ptr.as_ptr().add(index) }
    }
}

impl Drop for HeartbeatTable {
    fn drop(&mut self) {
        // SAFETY: munmap(2) of exactly the region `new` mapped; no reference into it outlives `self`
        // in this process (`slot` borrows `self`; `leak_slot` is only used in children, which never
        // drop the table).
        unsafe { libc::munmap(self.base.as_ptr().cast(), Self::bytes(self.len)) };
    }
}

/// A worker's handle on its heartbeat slot, shared with the master.
///
/// Cheap to copy and `Send + Sync`: hand it to the thread that runs your event loop (the heartbeat)
/// and to the threads that run requests (the deadlines). Every method is a few atomic stores.
#[derive(Clone, Copy)]
pub struct Heartbeat {
    slot: &'static HeartbeatSlot,
}

impl std::fmt::Debug for Heartbeat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Heartbeat")
            .field("ready", &self.is_ready())
            .field("requests", &self.slot.requests())
            .finish()
    }
}

impl Heartbeat {
    pub(crate) fn new(slot: &'static HeartbeatSlot) -> Heartbeat {
        Heartbeat { slot }
    }

    /// The slot, shared with the master and the siblings.
    pub(crate) fn slot(&self) -> &'static HeartbeatSlot {
        self.slot
    }

    /// Records that the worker is alive now. Call it from your event loop at least once per
    /// `heartbeat_timeout` (a loop that waits with [`WorkerEnv::wait_for_listeners`](crate::prefork::WorkerEnv::wait_for_listeners)
    /// does it for you). A worker that stops beating for `heartbeat_timeout` is killed and replaced.
    pub fn beat(&self) {
        self.slot.beat_ms.store(now_ms(), Ordering::Release);
    }

    /// Tells the master that this worker is serving (and beats). Until then the worker is booting:
    /// the master waits for it at most `boot_timeout`, and a worker that exits before it is ready is a
    /// boot error.
    pub fn ready(&self) {
        self.beat();
        self.slot.set_flag(READY);
    }

    /// Whether [`ready`](Self::ready) was called.
    pub fn is_ready(&self) -> bool {
        self.slot.flags() & READY != 0
    }

    /// Reports the worker's oldest running request: its `deadline` and its request line (shown in the
    /// master's log if the worker has to be killed; cut to 120 bytes). A worker still running it more
    /// than the supervisor's `request_grace` after the deadline is killed and replaced.
    ///
    /// This is the one-request-at-a-time form. A worker that runs requests on several threads uses
    /// [`track`](Self::track) instead, which reports the oldest of them.
    pub fn request_started(&self, deadline: Instant, request_line: &str) {
        self.slot.line_seq.fetch_add(1, Ordering::AcqRel);
        write_bytes(&self.slot.line, &self.slot.line_len, request_line);
        self.slot.line_seq.fetch_add(1, Ordering::AcqRel);
        self.slot
            .deadline_ms
            .store(instant_to_ms(deadline).max(1), Ordering::Release);
    }

    /// Reports that no request is running any more, and counts one request done. When the count
    /// reaches the worker's `max_requests` (plus its jitter), the worker asks the master to replace
    /// it: see [`wants_retire`](Self::wants_retire).
    pub fn request_finished(&self) {
        self.slot.deadline_ms.store(0, Ordering::Release);
        self.one_done();
    }

    /// Registers a running request (its deadline and request line) for as long as the returned
    /// guard lives, from any thread: the slot always shows the request with the earliest deadline
    /// among those running, so the master kills the process when one of them is stuck past its
    /// deadline plus `request_grace`, even while other threads go on serving. Dropping the guard
    /// counts one finished request (see [`request_finished`](Self::request_finished)).
    ///
    /// A handler thread that never returns keeps its guard, and so its deadline, for ever: that is
    /// how a request the in-process watchdog could not recover gets its process replaced.
    pub fn track(&self, deadline: Instant, request_line: &str) -> RequestGuard {
        let id = NEXT_REQUEST.fetch_add(1, Ordering::Relaxed);
        let mut running = RUNNING.lock().unwrap_or_else(|p| p.into_inner());
        running.push((id, deadline, request_line.to_string()));
        self.publish_oldest(&running);
        self.slot
            .running
            .store(running.len() as u32, Ordering::Release);
        RequestGuard {
            heartbeat: *self,
            id,
        }
    }

    /// Counts one request as running until the returned guard drops, then as done (toward
    /// `max_requests`). Three atomic operations: what the request is and its deadline are not
    /// written here but read from the pool's record by [`publish_overdue`](Self::publish_overdue).
    pub(crate) fn count_running(&self) -> Counted {
        self.slot.running.fetch_add(1, Ordering::AcqRel);
        Counted { heartbeat: *self }
    }

    /// Publishes, from the pool's records (what each thread runs), the request furthest past its
    /// deadline, or none. The worker's main thread calls it every [`PUBLISH_EVERY`]: the master
    /// kills the process once the published request is `request_grace` late. Only a request
    /// already past its deadline is published, so a request that ends in time is never seen late
    /// through a stale publication; a late one is seen at most `PUBLISH_EVERY` later than at once.
    pub(crate) fn publish_overdue(&self, records: &[Record], now: Instant) {
        let late = records.iter().filter(|r| r.deadline <= now);
        self.publish_late(
            late.min_by_key(|r| r.deadline)
                .map(|r| (r.deadline, r.label.as_str())),
        );
    }

    /// Publishes `late`, the deadline and line of the request furthest past its deadline, or none:
    /// [`publish_overdue`](Self::publish_overdue) for a worker that keeps its own records (the
    /// tower mode's lifeline, from its watch).
    pub(crate) fn publish_late(&self, late: Option<(Instant, &str)>) {
        match late {
            Some((deadline, line)) => self.request_started(deadline, line),
            None => self.slot.deadline_ms.store(0, Ordering::Release),
        }
    }

    /// One request done: counted, and the worker asks to retire at its `max_requests`.
    fn one_done(&self) {
        let done = self.slot.requests.fetch_add(1, Ordering::AcqRel) + 1;
        let max = self.slot.max_requests.load(Ordering::Relaxed);
        if max != 0 && done >= max && !self.wants_retire() {
            self.retire();
        }
    }

    fn publish_oldest(&self, running: &[(u64, Instant, String)]) {
        match running.iter().min_by_key(|(_, deadline, _)| *deadline) {
            Some((_, deadline, line)) => self.request_started(*deadline, line),
            None => self.slot.deadline_ms.store(0, Ordering::Release),
        }
    }

    /// Marks this worker's boot as failed with `message` (the master halts with it: a boot error).
    pub(crate) fn fail_boot(&self, message: &str) {
        self.slot.set_note(message);
        self.slot.set_flag(BOOT_FAILED);
    }

    /// Asks the master to replace this worker: it forks a replacement, waits until the replacement is
    /// ready, then sends this worker SIGTERM (a graceful stop). Keep serving until then.
    pub fn retire(&self) {
        let before = self.slot.flags.fetch_or(RETIRE, Ordering::AcqRel);
        if before & RETIRE == 0 {
            crate::prefork::os::signals::wake_master();
        }
    }

    /// Whether this worker asked to be replaced.
    pub fn wants_retire(&self) -> bool {
        self.slot.flags() & RETIRE != 0
    }

    /// Requests finished by this worker so far.
    pub fn requests(&self) -> u64 {
        self.slot.requests()
    }

    /// How long ago the last beat was.
    pub fn since_last_beat(&self) -> Duration {
        Duration::from_millis(now_ms().saturating_sub(self.slot.beat_ms()))
    }
}

/// The requests of this process that [`Heartbeat::track`] follows (one list per worker process: it
/// is made after the fork, empty, and never shared with another process).
static RUNNING: std::sync::Mutex<Vec<(u64, Instant, String)>> = std::sync::Mutex::new(Vec::new());
static NEXT_REQUEST: AtomicU64 = AtomicU64::new(0);

/// A running request registered with [`Heartbeat::track`]; dropping it ends the request.
#[derive(Debug)]
#[must_use = "the request counts as running only while the guard lives"]
pub struct RequestGuard {
    heartbeat: Heartbeat,
    id: u64,
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let mut running = RUNNING.lock().unwrap_or_else(|p| p.into_inner());
        running.retain(|(id, _, _)| *id != self.id);
        self.heartbeat.publish_oldest(&running);
        self.heartbeat
            .slot
            .running
            .store(running.len() as u32, Ordering::Release);
        drop(running);
        self.heartbeat.one_done();
    }
}

/// How often a worker of `serve_http` publishes its overdue request from the pool's records
/// (see [`Heartbeat::publish_overdue`]).
pub(crate) const PUBLISH_EVERY: Duration = Duration::from_millis(100);

/// A request counted by [`Heartbeat::count_running`]; dropping it counts it done.
#[must_use = "the request counts as running only while the guard lives"]
pub(crate) struct Counted {
    heartbeat: Heartbeat,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.heartbeat.slot.running.fetch_sub(1, Ordering::AcqRel);
        self.heartbeat.one_done();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_connection_is_published_at_once_but_not_over_a_drain() {
        let table = HeartbeatTable::new(1).unwrap();
        let slot = table.slot(0);
        slot.set_conns(5);
        slot.update_conns(4);
        assert_eq!(slot.conns(), 4);
        slot.set_conns(NOT_ACCEPTING);
        slot.update_conns(3);
        assert_eq!(
            slot.conns(),
            NOT_ACCEPTING,
            "a draining worker stays out of the count"
        );
    }

    #[test]
    fn only_a_request_past_its_deadline_is_published_and_counted_ones_retire_at_max_requests() {
        use crate::pool::Label;
        let table = HeartbeatTable::new(1).unwrap();
        table.slot(0).reset(2);
        let hb = Heartbeat::new(table.leak_slot(0));
        let slot = table.slot(0);
        let now = Instant::now();
        let record = |deadline: Instant, line: &str| {
            let mut label = Label::EMPTY;
            label.push(line);
            Record {
                worker: Some(0),
                started: now - Duration::from_secs(10),
                deadline,
                label,
            }
        };
        let in_time = record(now + Duration::from_secs(5), "GET /in-time HTTP/1.1");
        hb.publish_overdue(std::slice::from_ref(&in_time), now);
        assert_eq!(
            slot.deadline_ms(),
            0,
            "a request within its deadline is not published"
        );
        let late = record(now - Duration::from_secs(2), "GET /late HTTP/1.1");
        let later = record(now - Duration::from_secs(1), "GET /later HTTP/1.1");
        hb.publish_overdue(&[in_time.clone(), later, late], now);
        assert_eq!(
            slot.request_line(),
            "GET /late HTTP/1.1",
            "the furthest past its deadline"
        );
        assert!(slot.deadline_ms() != 0 && slot.deadline_ms() <= now_ms() - 1_500);
        hb.publish_overdue(&[in_time], now);
        assert_eq!(slot.deadline_ms(), 0, "taken back once it ended");

        let a = hb.count_running();
        let b = hb.count_running();
        assert_eq!(slot.running(), 2);
        drop(a);
        assert_eq!((slot.running(), hb.requests()), (1, 1));
        assert!(!hb.wants_retire());
        drop(b);
        assert_eq!((slot.running(), hb.requests()), (0, 2));
        assert!(hb.wants_retire(), "max_requests 2 reached");
    }

    #[test]
    fn slots_start_empty_and_keep_what_is_written() {
        let table = HeartbeatTable::new(4).unwrap();
        let slot = table.slot(3);
        assert_eq!(slot.flags(), 0);
        slot.reset(2);
        let hb = Heartbeat::new(table.leak_slot(3));
        assert!(!hb.is_ready());
        hb.ready();
        assert!(hb.is_ready());
        hb.request_started(
            Instant::now() + Duration::from_secs(5),
            "GET /slow HTTP/1.1",
        );
        assert_eq!(slot.request_line(), "GET /slow HTTP/1.1");
        assert!(slot.deadline_ms() >= now_ms() + 4_000);
        hb.request_finished();
        assert_eq!(slot.deadline_ms(), 0);
        assert!(!hb.wants_retire());
        hb.request_finished();
        assert!(hb.wants_retire());
        let later = hb.track(
            Instant::now() + Duration::from_secs(60),
            "GET /later HTTP/1.1",
        );
        let sooner = hb.track(
            Instant::now() + Duration::from_secs(5),
            "GET /sooner HTTP/1.1",
        );
        assert_eq!(slot.request_line(), "GET /sooner HTTP/1.1");
        drop(sooner);
        assert_eq!(slot.request_line(), "GET /later HTTP/1.1");
        drop(later);
        assert_eq!(slot.deadline_ms(), 0);
        assert_eq!(hb.requests(), 4);
        slot.set_note("boom");
        assert_eq!(slot.note(), "boom");
        let siblings = crate::prefork::workers::siblings::Siblings::new(table.leak_all());
        assert!(siblings.pids().is_empty());
        table.slot(0).set_pid(std::process::id());
        table.slot(2).set_pid(4242);
        assert_eq!(siblings.pids(), vec![4242]);
        table.slot(2).reset(0);
        assert!(siblings.pids().is_empty());
        drop(table);
    }
}
