//! The watchdog's board: each worker slot's running deadline, the heap of queued jobs' deadlines,
//! and when the watchdog sleeps until (its next wake). A leaf, like rayon-core's `sleep/`: it knows
//! deadlines and how to sleep for them, not what a job or a worker is.
//!
//! There is no polling tick. A worker that starts a job publishes its deadline in its slot and
//! wakes the watchdog only when that deadline is earlier than the one the watchdog sleeps for (or
//! the watchdog is scanning), so in steady state a job costs the watchdog one atomic load.
//!
//! Deadlines are nanoseconds since the pool's epoch ([`nanos_since`]).

use std::cmp::Ordering as CmpOrdering;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

/// "No deadline" in a slot (idle), and "not sleeping for any deadline" in the next wake.
pub(crate) const NO_DEADLINE: u64 = u64::MAX;

/// `t` as nanoseconds since `epoch` (0 before it).
#[inline]
pub(crate) fn nanos_since(epoch: Instant, t: Instant) -> u64 {
    t.saturating_duration_since(epoch).as_nanos() as u64
}

/// The deadline of the job a worker slot is running, [`NO_DEADLINE`] when idle: written by the
/// worker, read by the watchdog and the stats without a lock.
pub(crate) struct SlotDeadline(AtomicU64);

impl SlotDeadline {
    pub(crate) fn new() -> Self {
        SlotDeadline(AtomicU64::new(NO_DEADLINE))
    }

    #[inline]
    pub(crate) fn set(&self, deadline: u64) {
        self.0.store(deadline, Ordering::SeqCst);
    }

    #[inline]
    pub(crate) fn clear(&self) {
        self.0.store(NO_DEADLINE, Ordering::SeqCst);
    }

    #[inline]
    pub(crate) fn get(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }

    /// True while the slot runs a job (a relaxed look, for the stats).
    pub(crate) fn is_busy(&self) -> bool {
        self.0.load(Ordering::Relaxed) != NO_DEADLINE
    }
}

/// A queued job's deadline, ordered earliest first in a max-heap.
struct QueuedEntry<T> {
    deadline: u64,
    item: Weak<T>,
}

impl<T> PartialEq for QueuedEntry<T> {
    fn eq(&self, other: &Self) -> bool {
        self.deadline == other.deadline
    }
}
impl<T> Eq for QueuedEntry<T> {}
impl<T> PartialOrd for QueuedEntry<T> {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for QueuedEntry<T> {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        other.deadline.cmp(&self.deadline)
    }
}

/// What one scan found past its deadline: slot indexes, and queued items still alive.
pub(crate) struct Expired<T> {
    pub(crate) slots: Vec<usize>,
    pub(crate) queued: Vec<Arc<T>>,
}

impl<T> Expired<T> {
    pub(crate) fn new() -> Self {
        Expired {
            slots: Vec::new(),
            queued: Vec::new(),
        }
    }

    fn is_empty(&self) -> bool {
        self.slots.is_empty() && self.queued.is_empty()
    }
}

/// The board the watchdog sleeps on; `T` is what a queued entry points to (a job).
pub(crate) struct DeadlineBoard<T> {
    /// True once the pool is shut down; also the lock the watchdog sleeps under.
    stop: Mutex<bool>,
    cv: Condvar,
    /// The deadline the watchdog sleeps until; [`NO_DEADLINE`] while it scans or has nothing to
    /// wait for.
    next_wake: AtomicU64,
    queued: Mutex<BinaryHeap<QueuedEntry<T>>>,
}

impl<T> DeadlineBoard<T> {
    pub(crate) fn new() -> Self {
        DeadlineBoard {
            stop: Mutex::new(false),
            cv: Condvar::new(),
            next_wake: AtomicU64::new(NO_DEADLINE),
            queued: Mutex::new(BinaryHeap::new()),
        }
    }

    /// True when the watchdog must be woken to see `deadline`: it sleeps past it, or scans.
    #[inline]
    pub(crate) fn needs_wake(&self, deadline: u64) -> bool {
        deadline < self.next_wake.load(Ordering::SeqCst)
    }

    /// A deadline is now being watched: wake the watchdog if it sleeps past it.
    #[inline]
    pub(crate) fn watch(&self, deadline: u64) {
        if self.needs_wake(deadline) {
            let _guard = self.stop.lock();
            self.cv.notify_one();
        }
    }

    /// Watch a queued item's deadline (the item is held weakly: once it is gone, it is not woken
    /// for).
    pub(crate) fn watch_queued(&self, deadline: u64, item: &Arc<T>) {
        self.queued.lock().push(QueuedEntry {
            deadline,
            item: Arc::downgrade(item),
        });
        self.watch(deadline);
    }

    /// End [`wait_expired`](Self::wait_expired) for good.
    pub(crate) fn stop(&self) {
        *self.stop.lock() = true;
        self.cv.notify_all();
    }

    /// One look at the board at `now`: slots and queued items whose deadline is `<= now` go to
    /// `out` (queued items only while alive); returns the earliest deadline still ahead
    /// ([`NO_DEADLINE`] if none). When the heap holds more than `prune_over` entries, entries whose
    /// item is gone or no longer `still_queued` are dropped.
    pub(crate) fn scan(
        &self,
        now: u64,
        slot_deadlines: impl Iterator<Item = u64>,
        prune_over: usize,
        still_queued: impl Fn(&T) -> bool,
        out: &mut Expired<T>,
    ) -> u64 {
        let mut earliest = NO_DEADLINE;
        for (index, d) in slot_deadlines.enumerate() {
            if d <= now {
                out.slots.push(index);
            } else {
                earliest = earliest.min(d);
            }
        }
        let mut heap = self.queued.lock();
        while heap.peek().is_some_and(|e| e.deadline <= now) {
            let entry = heap.pop().expect("peeked");
            if let Some(item) = entry.item.upgrade() {
                out.queued.push(item);
            }
        }
        // Entries of jobs that already started are dead weight: prune them when they outnumber
        // what the queue can hold.
        if heap.len() > prune_over {
            heap.retain(|e| e.item.upgrade().is_some_and(|i| still_queued(&i)));
        }
        if let Some(top) = heap.peek() {
            earliest = earliest.min(top.deadline);
        }
        earliest
    }

    /// Sleep until something on the board is past its deadline and put it in `out` (true), or
    /// until [`stop`](Self::stop) (false). `slot_deadlines` gives each slot's deadline on each look.
    pub(crate) fn wait_expired<I: Iterator<Item = u64>>(
        &self,
        epoch: Instant,
        slot_deadlines: impl Fn() -> I,
        prune_over: usize,
        still_queued: impl Fn(&T) -> bool,
        out: &mut Expired<T>,
    ) -> bool {
        let mut stop = self.stop.lock();
        loop {
            if *stop {
                return false;
            }
            // While we scan, every worker that starts a job wakes us (NO_DEADLINE > any deadline),
            // so no deadline published during the scan is missed.
            self.next_wake.store(NO_DEADLINE, Ordering::SeqCst);
            let now = nanos_since(epoch, Instant::now());
            let earliest = self.scan(now, slot_deadlines(), prune_over, &still_queued, out);
            if !out.is_empty() {
                return true;
            }
            self.next_wake.store(earliest, Ordering::SeqCst);
            if earliest == NO_DEADLINE {
                self.cv.wait(&mut stop);
            } else {
                let at = epoch + Duration::from_nanos(earliest);
                self.cv.wait_until(&mut stop, at);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread;

    fn scan(board: &DeadlineBoard<u32>, now: u64, slots: &[u64]) -> (u64, Expired<u32>) {
        let mut out = Expired::new();
        let earliest = board.scan(now, slots.iter().copied(), 1000, |_| true, &mut out);
        (earliest, out)
    }

    #[test]
    fn the_earliest_deadline_wins() {
        let board = DeadlineBoard::new();
        let queued = Arc::new(7u32);
        board.watch_queued(250, &queued);
        board.watch_queued(400, &queued);
        let (earliest, out) = scan(&board, 100, &[NO_DEADLINE, 300, 200]);
        assert_eq!(earliest, 200, "the earliest slot deadline wins");
        assert!(out.is_empty(), "nothing is due at 100");

        let (earliest, out) = scan(&board, 200, &[NO_DEADLINE, 300, 200]);
        assert_eq!(out.slots, [2], "the slot at its deadline is due");
        assert!(out.queued.is_empty());
        assert_eq!(earliest, 250, "then the earliest queued deadline");

        let (earliest, out) = scan(&board, 260, &[NO_DEADLINE, 300, NO_DEADLINE]);
        assert_eq!(out.queued.len(), 1, "the queued deadline at 250 is due");
        assert!(out.slots.is_empty());
        assert_eq!(earliest, 300);

        let (earliest, out) = scan(&board, 1000, &[]);
        assert_eq!(out.queued.len(), 1, "the one at 400");
        assert_eq!(earliest, NO_DEADLINE, "nothing left to wait for");
    }

    #[test]
    fn a_cleared_slot_or_a_gone_job_is_not_woken_for() {
        let board = DeadlineBoard::new();
        let gone = Arc::new(1u32);
        board.watch_queued(100, &gone);
        drop(gone);
        let slot = SlotDeadline::new();
        slot.set(100);
        assert!(slot.is_busy());
        slot.clear();
        assert!(!slot.is_busy());
        let (earliest, out) = scan(&board, u64::MAX - 1, &[slot.get()]);
        assert!(out.slots.is_empty(), "a cleared slot never expires");
        assert!(
            out.queued.is_empty(),
            "an answered (dropped) job is not woken for"
        );
        assert_eq!(earliest, NO_DEADLINE);
    }

    #[test]
    fn entries_no_longer_queued_are_pruned_past_the_bound() {
        let board = DeadlineBoard::new();
        let started = Arc::new(1u32);
        for d in 0..10 {
            board.watch_queued(1000 + d, &started);
        }
        let mut out = Expired::new();
        let earliest = board.scan(0, std::iter::empty(), 5, |_| false, &mut out);
        assert_eq!(earliest, NO_DEADLINE, "every entry was pruned");
        assert!(out.is_empty());
    }

    #[test]
    fn next_wake_wakes_only_for_an_earlier_deadline() {
        let board = Arc::new(DeadlineBoard::<u32>::new());
        assert!(
            board.needs_wake(u64::MAX - 1),
            "a watchdog that is not asleep is woken"
        );
        let epoch = Instant::now();
        let far = nanos_since(epoch, Instant::now() + Duration::from_secs(600));
        let slots: Arc<[SlotDeadline; 2]> = Arc::new([SlotDeadline::new(), SlotDeadline::new()]);
        slots[0].set(far);
        let watchdog = {
            let (board, slots) = (board.clone(), slots.clone());
            thread::spawn(move || {
                let mut out = Expired::new();
                let woke = board.wait_expired(
                    epoch,
                    || slots.iter().map(SlotDeadline::get),
                    64,
                    |_| true,
                    &mut out,
                );
                (woke, out.slots, Instant::now())
            })
        };
        let t0 = Instant::now();
        while board.next_wake.load(Ordering::SeqCst) != far {
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "the watchdog never slept"
            );
            thread::yield_now();
        }
        assert!(
            !board.needs_wake(far + 1),
            "a later deadline does not wake it"
        );
        assert!(!board.needs_wake(far));
        assert!(board.needs_wake(far - 1), "an earlier deadline does");

        let soon = nanos_since(epoch, Instant::now() + Duration::from_millis(20));
        slots[1].set(soon);
        board.watch(soon);
        let (woke, due, at) = watchdog.join().unwrap();
        assert!(woke);
        assert_eq!(due, [1], "woken for the earlier deadline, not the far one");
        assert!(
            at < epoch + Duration::from_secs(300),
            "it did not sleep until the far deadline"
        );

        let stopper = {
            let board = board.clone();
            thread::spawn(move || {
                let mut out = Expired::new();
                board.wait_expired(epoch, std::iter::empty, 64, |_| true, &mut out)
            })
        };
        board.stop();
        assert!(!stopper.join().unwrap(), "a stopped board ends the wait");
    }
}
