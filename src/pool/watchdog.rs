//! The watchdog: one thread that sleeps until the earliest deadline of a running job (or of a
//! queued job that is waiting with no idle worker) and answers it when it passes.
//!
//! There is no polling tick. A worker that starts a job publishes its deadline in its slot and
//! wakes the watchdog only when that deadline is earlier than the one the watchdog sleeps for (or
//! the watchdog is scanning), so in steady state a job costs the watchdog one atomic load.

use std::cmp::Ordering as CmpOrdering;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use super::job::{Job, QUEUED};
use super::shared::Shared;

/// "No deadline" in a slot, and "not sleeping for any deadline" in `next_wake`.
pub(crate) const NONE: u64 = u64::MAX;

/// A queued job's deadline, ordered earliest first in a max-heap.
pub(crate) struct QueuedEntry<Req, Resp> {
    deadline: u64,
    job: Weak<Job<Req, Resp>>,
}

impl<Req, Resp> QueuedEntry<Req, Resp> {
    pub(crate) fn new(deadline: u64, job: &Arc<Job<Req, Resp>>) -> Self {
        QueuedEntry {
            deadline,
            job: Arc::downgrade(job),
        }
    }
}

impl<Req, Resp> PartialEq for QueuedEntry<Req, Resp> {
    fn eq(&self, other: &Self) -> bool {
        self.deadline == other.deadline
    }
}
impl<Req, Resp> Eq for QueuedEntry<Req, Resp> {}
impl<Req, Resp> PartialOrd for QueuedEntry<Req, Resp> {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}
impl<Req, Resp> Ord for QueuedEntry<Req, Resp> {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        other.deadline.cmp(&self.deadline)
    }
}

pub(crate) struct Watchdog<Req, Resp> {
    /// True once the pool is shut down.
    stop: Mutex<bool>,
    cv: Condvar,
    /// The deadline the watchdog sleeps until; [`NONE`] while it scans or has nothing to wait for.
    next_wake: AtomicU64,
    pub(crate) queued: Mutex<BinaryHeap<QueuedEntry<Req, Resp>>>,
    pub(crate) thread: Mutex<Option<JoinHandle<()>>>,
}

impl<Req, Resp> Watchdog<Req, Resp> {
    pub(crate) fn new() -> Self {
        Watchdog {
            stop: Mutex::new(false),
            cv: Condvar::new(),
            next_wake: AtomicU64::new(NONE),
            queued: Mutex::new(BinaryHeap::new()),
            thread: Mutex::new(None),
        }
    }

    /// A deadline (ns since the epoch) is now being watched: wake the watchdog if it sleeps past it.
    pub(crate) fn started(&self, deadline: u64) {
        if deadline < self.next_wake.load(Ordering::SeqCst) {
            let _guard = self.stop.lock();
            self.cv.notify_one();
        }
    }

    pub(crate) fn stop(&self) {
        *self.stop.lock() = true;
        self.cv.notify_all();
        if let Some(handle) = self.thread.lock().take() {
            if handle.thread().id() != std::thread::current().id() {
                let _ = handle.join();
            }
        }
    }
}

impl<Req: Send + 'static, Resp: Send + 'static> Shared<Req, Resp> {
    pub(crate) fn watchdog_loop(self: Arc<Self>) {
        let wd = &self.watchdog;
        let mut expired_slots = Vec::new();
        let mut expired_queued = Vec::new();
        loop {
            {
                let mut stop = wd.stop.lock();
                loop {
                    if *stop {
                        return;
                    }
                    // While we scan, every worker that starts a job wakes us (NONE > any deadline),
                    // so no deadline published during the scan is missed.
                    wd.next_wake.store(NONE, Ordering::SeqCst);
                    let now = self.nanos(std::time::Instant::now());
                    let mut earliest = NONE;
                    for (index, slot) in self.slots.iter().enumerate() {
                        let d = slot.deadline_ns.load(Ordering::SeqCst);
                        if d <= now {
                            expired_slots.push(index);
                        } else {
                            earliest = earliest.min(d);
                        }
                    }
                    {
                        let mut heap = wd.queued.lock();
                        while heap.peek().is_some_and(|e| e.deadline <= now) {
                            let entry = heap.pop().expect("peeked");
                            if let Some(job) = entry.job.upgrade() {
                                expired_queued.push(job);
                            }
                        }
                        // Entries of jobs that already started are dead weight: prune them when
                        // they outnumber what the queue can hold.
                        if heap.len() > 2 * self.config.queue_capacity + 64 {
                            heap.retain(|e| {
                                e.job
                                    .upgrade()
                                    .is_some_and(|j| j.state.load(Ordering::Acquire) == QUEUED)
                            });
                        }
                        if let Some(top) = heap.peek() {
                            earliest = earliest.min(top.deadline);
                        }
                    }
                    if !expired_slots.is_empty() || !expired_queued.is_empty() {
                        break;
                    }
                    wd.next_wake.store(earliest, Ordering::SeqCst);
                    if earliest == NONE {
                        wd.cv.wait(&mut stop);
                    } else {
                        let at = self.epoch + Duration::from_nanos(earliest);
                        wd.cv.wait_until(&mut stop, at);
                    }
                }
            }
            for index in expired_slots.drain(..) {
                self.expire_running(index);
            }
            for job in expired_queued.drain(..) {
                self.expire_queued(&job);
            }
        }
    }
}
