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

    /// Back to idle. A release store, not `SeqCst` like [`set`](Self::set) (an `xchg` per job):
    /// only `set` pairs with the watchdog's sleep (it must see a deadline earlier than the one it
    /// sleeps for); a watchdog that still reads the old deadline wakes for it, finds the slot's
    /// job gone under the slot's lock (the worker clears both under it), and sleeps again.
    #[inline]
    pub(crate) fn clear(&self) {
        self.0.store(NO_DEADLINE, Ordering::Release);
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

/// What a queued entry points to, as the board needs to know it: whether it still waits in the
/// queue (an entry of an item that started, or was answered, is dead weight), and a once-only mark
/// so that an item is put on the board at most once.
pub(crate) trait QueuedItem {
    /// True while the item waits in the queue (nobody has claimed it yet).
    fn still_queued(&self) -> bool;
    /// Mark the item as watched; false if it was already.
    fn mark_watched(&self) -> bool;
}

/// Dead entries tolerated above twice the live ones before a prune. Keeps a prune's cost (the
/// whole heap) below two pushes' worth per push, so pruning is amortised O(1), whatever the rate.
pub(crate) const PRUNE_SLACK: usize = 32;

/// The heap of queued deadlines, and the size at which the next push or scan prunes it.
struct QueuedHeap<T> {
    heap: BinaryHeap<QueuedEntry<T>>,
    /// Twice the live entries found by the last prune, plus [`PRUNE_SLACK`].
    prune_at: usize,
}

impl<T: QueuedItem> QueuedHeap<T> {
    /// Drop the entries of items that are gone or no longer queued, once the heap has grown past
    /// `prune_at`. What stays is at most the jobs waiting in the queue, so the heap never holds
    /// more than twice the jobs that were queued at the last prune plus [`PRUNE_SLACK`], whatever
    /// the deadline and the request rate (before, it held one entry per job enqueued while no worker
    /// was idle, for a whole deadline: rate × deadline allocations).
    fn prune_if_due(&mut self) {
        if self.heap.len() <= self.prune_at {
            return;
        }
        self.heap
            .retain(|e| e.item.upgrade().is_some_and(|i| i.still_queued()));
        self.prune_at = 2 * self.heap.len() + PRUNE_SLACK;
        // Give back the memory of a burst, too.
        if self.heap.capacity() > 4 * self.prune_at {
            self.heap.shrink_to(self.prune_at);
        }
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
    queued: Mutex<QueuedHeap<T>>,
}

impl<T: QueuedItem> DeadlineBoard<T> {
    pub(crate) fn new() -> Self {
        DeadlineBoard {
            stop: Mutex::new(false),
            cv: Condvar::new(),
            next_wake: AtomicU64::new(NO_DEADLINE),
            queued: Mutex::new(QueuedHeap {
                heap: BinaryHeap::new(),
                prune_at: PRUNE_SLACK,
            }),
        }
    }

    /// How many queued-job entries the board holds now (each keeps its job's allocation).
    #[cfg(test)]
    pub(crate) fn queued_entries(&self) -> usize {
        self.queued.lock().heap.len()
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
    /// for). An item already watched is not added twice. Entries of items that left the queue
    /// are pruned here once they outnumber the live ones (see [`QueuedHeap`]).
    pub(crate) fn watch_queued(&self, deadline: u64, item: &Arc<T>) {
        if !item.mark_watched() {
            return;
        }
        {
            let mut queued = self.queued.lock();
            queued.heap.push(QueuedEntry {
                deadline,
                item: Arc::downgrade(item),
            });
            queued.prune_if_due();
        }
        self.watch(deadline);
    }

    /// End [`wait_expired`](Self::wait_expired) for good.
    pub(crate) fn stop(&self) {
        *self.stop.lock() = true;
        self.cv.notify_all();
    }

    /// One look at the board at `now`: slots and queued items whose deadline is `<= now` go to
    /// `out` (queued items only while alive); returns the earliest deadline still ahead
    /// ([`NO_DEADLINE`] if none). Entries of items that left the queue are pruned when due.
    pub(crate) fn scan(
        &self,
        now: u64,
        slot_deadlines: impl Iterator<Item = u64>,
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
        let mut queued = self.queued.lock();
        while queued.heap.peek().is_some_and(|e| e.deadline <= now) {
            let entry = queued.heap.pop().expect("peeked");
            if let Some(item) = entry.item.upgrade() {
                out.queued.push(item);
            }
        }
        queued.prune_if_due();
        if let Some(top) = queued.heap.peek() {
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
            let earliest = self.scan(now, slot_deadlines(), out);
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
    use std::sync::atomic::AtomicBool;
    use std::thread;

    /// A test item: 0 stands for "started" (no longer queued); it may be watched any number of
    /// times.
    impl QueuedItem for u32 {
        fn still_queued(&self) -> bool {
            *self != 0
        }
        fn mark_watched(&self) -> bool {
            true
        }
    }

    /// An item as a job is: watched once, queued until it starts.
    struct Once {
        queued: AtomicBool,
        watched: AtomicBool,
    }

    impl Once {
        fn new() -> Arc<Once> {
            Arc::new(Once {
                queued: AtomicBool::new(true),
                watched: AtomicBool::new(false),
            })
        }
    }

    impl QueuedItem for Once {
        fn still_queued(&self) -> bool {
            self.queued.load(Ordering::SeqCst)
        }
        fn mark_watched(&self) -> bool {
            !self.watched.swap(true, Ordering::SeqCst)
        }
    }

    fn scan(board: &DeadlineBoard<u32>, now: u64, slots: &[u64]) -> (u64, Expired<u32>) {
        let mut out = Expired::new();
        let earliest = board.scan(now, slots.iter().copied(), &mut out);
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
        let started = Arc::new(0u32);
        for d in 0..PRUNE_SLACK as u64 {
            board.watch_queued(1000 + d, &started);
        }
        let mut out = Expired::new();
        assert_eq!(board.scan(0, std::iter::empty(), &mut out), 1000);
        assert_eq!(
            board.queued_entries(),
            PRUNE_SLACK,
            "not yet past the bound"
        );
        board.watch_queued(2000, &started);
        assert_eq!(
            board.queued_entries(),
            0,
            "the push past the bound pruned them"
        );
        let earliest = board.scan(0, std::iter::empty(), &mut out);
        assert_eq!(earliest, NO_DEADLINE, "every entry was pruned");
        assert!(out.is_empty());
    }

    #[test]
    fn the_heap_stays_bounded_by_the_live_entries_whatever_the_pushes() {
        let board = DeadlineBoard::new();
        // Ten items stay queued the whole time; a million pass through (queued, then started).
        let live: Vec<_> = (0..10).map(|_| Once::new()).collect();
        for (i, item) in live.iter().enumerate() {
            board.watch_queued(1_000_000_000 + i as u64, item);
        }
        let mut most = 0;
        for n in 0..1_000_000u64 {
            let item = Once::new();
            board.watch_queued(2_000_000_000 + n, &item);
            // Kept alive (as a job is by the queue and the worker), but started.
            item.queued.store(false, Ordering::SeqCst);
            most = most.max(board.queued_entries());
        }
        assert!(
            most <= 2 * (live.len() + 1) + PRUNE_SLACK + 1,
            "the heap held {most} entries for 11 queued jobs"
        );
        assert!(board.queued.lock().heap.capacity() <= 4 * (2 * 11 + PRUNE_SLACK) + 64);
    }

    #[test]
    fn an_item_is_watched_once() {
        let board = DeadlineBoard::new();
        let item = Once::new();
        board.watch_queued(100, &item);
        board.watch_queued(50, &item);
        assert_eq!(board.queued_entries(), 1);
        let mut out = Expired::new();
        assert_eq!(board.scan(0, std::iter::empty(), &mut out), 100);
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
                let woke =
                    board.wait_expired(epoch, || slots.iter().map(SlotDeadline::get), &mut out);
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
                board.wait_expired(epoch, std::iter::empty, &mut out)
            })
        };
        board.stop();
        assert!(!stopper.join().unwrap(), "a stopped board ends the wait");
    }
}
