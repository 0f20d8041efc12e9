//! The lend: the one job a resting worker submitted from its own thread (the HTTP server's sleeper
//! read a request there), kept in the worker's slot for it to run next instead of queued, and the
//! thread-local mark ([`Resting`]) that tells [`resting_worker`] which worker this thread is.

use std::cell::Cell;
use std::sync::atomic::Ordering;

use crate::sync::{AtomicBool, Mutex};

crate::sync::thread_local! {
    /// While a worker thread rests in [`IdleWait::recv`], or answers the job it has just run
    /// (`true`: finishing): its pool's id and its slot index.
    static RESTING: Cell<(usize, usize, bool)> = Cell::new((0, 0, false));
}

/// The slot index of the worker of pool `pool` on this thread that takes a job submitted here,
/// if this thread is one: resting in its sleeper, or (`finishing`) answering the job it has just
/// run (it takes the lent job as soon as the answer is out: `worker.rs`). A job it submits to its
/// own pool is lent to it, not queued.
pub(crate) fn resting_worker(pool: usize, finishing: bool) -> Option<usize> {
    let (id, index, answering) = RESTING.with(Cell::get);
    (id == pool && pool != 0 && (finishing || !answering)).then_some(index)
}

/// A worker slot's lend: the one job its worker submitted while it rested in the pool's sleeper,
/// which it runs next (asked first by [`IdleWait::recv`] after each sleep).
pub(crate) struct Lend<T> {
    job: Mutex<Option<T>>,
    /// Whether `job` holds one (set with it, under its lock): the worker asks after every sleep,
    /// and an empty lend is answered without taking the lock.
    has: AtomicBool,
}

impl<T> Lend<T> {
    pub(crate) fn new() -> Self {
        Lend {
            job: Mutex::new(None),
            has: AtomicBool::new(false),
        }
    }

    /// Lend `make()` to the worker resting on this thread as slot `index` of pool `pool` (or,
    /// with `finishing`, answering its job: for a submission nobody on this thread waits for):
    /// true if it was lent; false if this thread is not that worker or its lend is taken already
    /// (the job then goes through the queue).
    #[inline]
    pub(crate) fn offer_from_resting<'a>(
        lends: impl FnOnce(usize) -> Option<&'a Lend<T>>,
        pool: usize,
        finishing: bool,
        make: impl FnOnce() -> T,
    ) -> bool
    where
        T: 'a,
    {
        let Some(lend) = resting_worker(pool, finishing).and_then(lends) else {
            return false;
        };
        let mut lent = lend.job.lock();
        if lent.is_some() {
            return false;
        }
        *lent = Some(make());
        lend.has.store(true, Ordering::Release);
        true
    }

    /// The lent job, taken (once).
    #[inline]
    pub(crate) fn take(&self) -> Option<T> {
        if !self.has.load(Ordering::Acquire) {
            return None;
        }
        let mut lent = self.job.lock();
        self.has.store(false, Ordering::Relaxed);
        lent.take()
    }
}

/// Marks this thread as worker `index` of pool `pool` resting (or finishing), until dropped.
pub(crate) struct Resting(());

impl Resting {
    pub(crate) fn enter(pool: usize, index: usize) -> Self {
        RESTING.with(|r| r.set((pool, index, false)));
        Resting(())
    }

    /// Worker `index` of pool `pool` answers the job it has just run: a job submitted meanwhile
    /// from this thread without waiting for it (the HTTP server read the connection's next
    /// request while it wrote this answer) is lent to it, and it runs that job next.
    pub(crate) fn finishing(pool: usize, index: usize) -> Self {
        RESTING.with(|r| r.set((pool, index, true)));
        Resting(())
    }
}

impl Drop for Resting {
    fn drop(&mut self) {
        RESTING.with(|r| r.set((0, 0, false)));
    }
}
