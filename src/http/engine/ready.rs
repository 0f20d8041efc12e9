//! The lane's ready queue: the events a worker's wait took from the epoll set beyond the one it
//! acts on (a batch, `lane.rs`), left for the next thread that would wait there, and the lane's
//! progress word that says who waits.
//!
//! The rule: nothing left here is stranded while a worker waits in the set. A thread about to
//! wait counts itself waiting, then looks here ([`ReadyQueue::enter`]); a thread that leaves
//! events adds and counts them, then looks for waiters ([`ReadyQueue::publish`]: it wakes one
//! when it sees one). Each side's write and look are one read-modify-write, a `SeqCst` fence, and a load: of
//! two threads doing this at once, at least one sees the other's write (the store-buffer pairing,
//! as in the connection's mailbox; the loom model at the bottom fails with either fence taken
//! out).

use std::collections::VecDeque;
use std::sync::atomic::Ordering::SeqCst;

use crate::http::engine::epoll::Ready;
use crate::sync::{fence, AtomicU64, AtomicUsize, Mutex};

/// A worker waiting in the lane, in the progress word (the low 16 bits: at most 65,535 workers).
pub(crate) const WAITER: u64 = 1;
/// An event taken by a worker, in the progress word.
pub(crate) const TOOK: u64 = 1 << 16;

/// Events left for the next waiter, first come first served.
pub(crate) struct ReadyQueue {
    items: Mutex<VecDeque<Ready>>,
    /// How many events `items` holds (looked at without its lock).
    queued: AtomicUsize,
}

impl ReadyQueue {
    pub(crate) fn new() -> Self {
        ReadyQueue {
            items: Mutex::new(VecDeque::new()),
            queued: AtomicUsize::new(0),
        }
    }

    /// This thread is about to wait in the set: count it waiting in `progress`, then take an
    /// event left here, if any (it then waits no more: the caller uncounts it). Returns the
    /// waiters counted before this one, and the event.
    #[inline]
    pub(crate) fn enter(&self, progress: &AtomicU64) -> (u64, Option<Ready>) {
        let others = progress.fetch_add(WAITER, SeqCst) % TOOK;
        // Pairs with the fence in `leave`: either this look sees the events left, or that
        // thread's look sees this waiter.
        fence(SeqCst);
        (others, self.take())
    }

    /// An event left here, if any (the reactor's take-over, or a waiter in `enter`).
    #[inline]
    pub(crate) fn take(&self) -> Option<Ready> {
        if self.queued.load(SeqCst) == 0 {
            return None;
        }
        let ev = self.items.lock().pop_front()?;
        self.queued.fetch_sub(1, SeqCst);
        Some(ev)
    }

    /// The queue's events, locked: events added here are taken by nobody who looked at the
    /// count before [`publish`](ReadyQueue::publish) counts them (a worker's wait puts them here
    /// as the epoll set lists them, with no copy).
    pub(crate) fn lock(&self) -> impl std::ops::DerefMut<Target = VecDeque<Ready>> + '_ {
        self.items.lock()
    }

    /// Count `n` events added through [`lock`](ReadyQueue::lock), left for the next threads
    /// that would wait. True when a thread waits in the set now (per `progress`): the caller wakes
    /// one, which takes one and passes the wake-up on while more are left
    /// ([`ReadyQueue::pass_on`]).
    #[inline]
    pub(crate) fn publish(&self, n: usize, progress: &AtomicU64) -> bool {
        if n == 0 {
            return false;
        }
        self.queued.fetch_add(n, SeqCst);
        // Pairs with the fence in `enter`.
        fence(SeqCst);
        progress.load(SeqCst) % TOOK > 0
    }

    /// After a waiter took an event here (and was uncounted): whether more are left while
    /// another thread waits in the set, which the caller then wakes.
    #[inline]
    pub(crate) fn pass_on(&self, progress: &AtomicU64) -> bool {
        self.queued.load(SeqCst) > 0 && progress.load(SeqCst) % TOOK > 0
    }

    /// Events left here now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.queued.load(SeqCst)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    fn ev(data: u64) -> Ready {
        Ready {
            data,
            ..Ready::default()
        }
    }

    #[test]
    fn events_left_are_taken_first_come_first_served_and_a_counted_waiter_is_to_be_woken() {
        let q = ReadyQueue::new();
        let progress = AtomicU64::new(0);
        let leave = |evs: &[Ready]| {
            q.lock().extend(evs.iter().copied());
            q.publish(evs.len(), &progress)
        };
        // Nobody waits: nobody to wake.
        assert!(!leave(&[ev(1), ev(2)]));
        assert!(!leave(&[]));
        assert_eq!(q.len(), 2);
        // A waiter comes: it is told of the waiters before it and takes the oldest event.
        let (others, got) = q.enter(&progress);
        assert_eq!((others, got.map(|e| e.data)), (0, Some(1)));
        // Still counted waiting (the lane uncounts it once it acts on the event): what is left
        // now is to wake it.
        assert!(leave(&[ev(3)]));
        assert!(q.pass_on(&progress));
        progress.fetch_sub(WAITER, SeqCst);
        assert!(!q.pass_on(&progress), "nobody waits");
        assert_eq!(q.take().map(|e| e.data), Some(2));
        assert_eq!(q.take().map(|e| e.data), Some(3));
        assert!(q.take().is_none());
        progress.fetch_add(WAITER, SeqCst);
        assert!(!q.pass_on(&progress), "nothing left");
    }
}

/// loom model (`RUSTFLAGS="--cfg loom" cargo test --release --lib loom`, run by `.ci/run`).
#[cfg(all(test, loom))]
mod loom_models {
    use super::*;
    use loom::sync::Arc;
    use loom::thread;

    /// A worker comes to wait in the set while another thread leaves an event: the worker takes
    /// the event, or the other thread sees it waiting (and wakes it). Never neither: the event
    /// would wait for a worker that sleeps in the set.
    #[test]
    fn loom_models_ready_an_event_left_as_a_worker_comes_to_wait_is_taken_or_wakes_it() {
        loom::model(|| {
            let q = Arc::new(ReadyQueue::new());
            let progress = Arc::new(AtomicU64::new(0));
            let (q2, p2) = (q.clone(), progress.clone());
            let leaver = thread::spawn(move || {
                q2.lock().push_back(Ready {
                    data: 7,
                    ..Ready::default()
                });
                q2.publish(1, &p2)
            });
            let (_, took) = q.enter(&progress);
            let woke = leaver.join().unwrap();
            assert!(
                took.is_some() || woke,
                "the event stranded: the worker waits in the set and nobody wakes it"
            );
        });
    }
}
