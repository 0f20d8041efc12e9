//! [`IdleWait`]: how an idle worker waits for the queue. It looks a few times (a spin of a
//! microsecond or so, no `sched_yield`), then sleeps on a condition variable until whoever puts a
//! message in the queue wakes one sleeper; or, when the pool's owner installed a [`Sleeper`] (the
//! HTTP server does), sleeps there: the server's idle workers wait on its connections, and the
//! worker that reads a request runs it ([`resting_worker`]: a job submitted from a resting
//! worker's own thread is lent to that worker instead of queued, so no other thread is woken).
//!
//! crossbeam-channel's blocking `recv` backs off with `sched_yield` calls before it parks; with
//! more runnable threads than cores (a CPU-bound neighbour, or the reactor and the workers on two
//! cores) a yield can cost the yielding thread a whole scheduler slice while it stays runnable, so
//! a job queued meanwhile waits milliseconds for a worker that was never asleep. A worker that
//! sleeps here is woken at once by the enqueuer (a futex wake), and a sleeper gets the wake-up
//! priority the scheduler gives to threads that slept.

use std::cell::Cell;
use std::sync::atomic::{fence, AtomicUsize, Ordering};
use std::sync::Arc;

use crossbeam_channel::{Receiver, TryRecvError};
use parking_lot::{Condvar, Mutex, RwLock};

/// Where an idle worker waits instead of the pool's condition variable, installed by the pool's
/// owner ([`Pool::set_sleeper`](super::Pool::set_sleeper)). The HTTP server's sleeper waits on
/// the connections: a worker that finds a complete request there submits it from its own thread,
/// and that job comes back to it (see [`resting_worker`]).
pub(crate) trait Sleeper: Send + Sync {
    /// Block the calling idle worker until [`wake`](Self::wake) is called, or until it has done
    /// some of the owner's work (which may have lent it a job), or a while has passed. Spurious
    /// returns are fine: the worker looks at the queue and comes back.
    fn sleep(&self);
    /// Wake one worker blocked in [`sleep`](Self::sleep) (a message was queued).
    fn wake(&self);
}

thread_local! {
    /// While a worker thread rests in [`IdleWait::recv`]: its pool's id and its slot index.
    static RESTING: Cell<(usize, usize)> = const { Cell::new((0, 0)) };
}

/// The slot index of the worker of pool `pool` resting on this thread (inside its sleeper), if
/// this thread is one: a job it submits to its own pool is lent to it, not queued.
pub(crate) fn resting_worker(pool: usize) -> Option<usize> {
    let (id, index) = RESTING.with(Cell::get);
    (id == pool && pool != 0).then_some(index)
}

/// Marks this thread as worker `index` of pool `pool` resting, until dropped.
struct Resting;

impl Resting {
    fn enter(pool: usize, index: usize) -> Self {
        RESTING.with(|r| r.set((pool, index)));
        Resting
    }
}

impl Drop for Resting {
    fn drop(&mut self) {
        RESTING.with(|r| r.set((0, 0)));
    }
}

/// How many times an idle worker looks at the queue (with a spin hint in between) before it
/// sleeps.
const SPINS: u32 = 64;

/// The sleeping side of the queue.
#[derive(Default)]
pub(crate) struct IdleWait {
    /// Workers asleep (or about to be) in [`recv`](Self::recv).
    sleepers: AtomicUsize,
    lock: Mutex<()>,
    cv: Condvar,
    sleeper: RwLock<Option<Arc<dyn Sleeper>>>,
}

impl IdleWait {
    /// The next message, or `Err` when the queue is disconnected. Blocks until there is one.
    /// `lent` is asked first after each sleep: the job this worker lent itself while it rested
    /// as worker `index` of pool `pool` (see [`resting_worker`]).
    pub(crate) fn recv<T>(
        &self,
        rx: &Receiver<T>,
        (pool, index): (usize, usize),
        lent: impl Fn() -> Option<T>,
    ) -> Result<T, TryRecvError> {
        // With a sleeper, work comes through it, not the queue: no spin.
        let spins = if self.sleeper.read().is_some() {
            0
        } else {
            SPINS
        };
        for _ in 0..spins {
            match rx.try_recv() {
                Err(TryRecvError::Empty) => std::hint::spin_loop(),
                other => return other,
            }
        }
        loop {
            // Bound first: a guard in an `if let` scrutinee would live through the `else` too.
            let sleeper = self.sleeper.read().clone();
            if let Some(s) = sleeper {
                if let Some(msg) = self.announce(rx) {
                    return msg;
                }
                {
                    let _resting = Resting::enter(pool, index);
                    s.sleep();
                }
                self.sleepers.fetch_sub(1, Ordering::SeqCst);
                if let Some(job) = lent() {
                    return Ok(job);
                }
            } else {
                let mut guard = self.lock.lock();
                if let Some(msg) = self.announce(rx) {
                    return msg;
                }
                // A sleeper installed since the look above notified before this lock was taken.
                if self.sleeper.read().is_none() {
                    self.cv.wait(&mut guard);
                }
                self.sleepers.fetch_sub(1, Ordering::SeqCst);
            }
            match rx.try_recv() {
                Err(TryRecvError::Empty) => {}
                other => {
                    // Wake-ups can merge (two messages, one wake-up): pass the rest on.
                    if !rx.is_empty() {
                        self.wake_one();
                    }
                    return other;
                }
            }
        }
    }

    /// Count this worker as a sleeper, then look at the queue once more: a message (or the
    /// disconnect) found now is returned with the count undone.
    fn announce<T>(&self, rx: &Receiver<T>) -> Option<Result<T, TryRecvError>> {
        self.sleepers.fetch_add(1, Ordering::SeqCst);
        // Pairs with the fence in `wake_one`: either the enqueuer sees this sleeper, or this
        // look sees its message.
        fence(Ordering::SeqCst);
        match rx.try_recv() {
            Err(TryRecvError::Empty) => None,
            other => {
                self.sleepers.fetch_sub(1, Ordering::SeqCst);
                Some(other)
            }
        }
    }

    /// Sleep in `sleeper` from now on (`None`: on the condition variable again). A worker asleep
    /// on the condition variable is woken to move; the previous sleeper's owner must release the
    /// workers blocked in it.
    pub(crate) fn set_sleeper(&self, sleeper: Option<Arc<dyn Sleeper>>) {
        *self.sleeper.write() = sleeper;
        let _guard = self.lock.lock();
        self.cv.notify_all();
    }

    /// After a message was put in the queue: wake one sleeping worker, if any.
    pub(crate) fn wake_one(&self) {
        fence(Ordering::SeqCst);
        if self.sleepers.load(Ordering::SeqCst) > 0 {
            if let Some(s) = self.sleeper.read().as_ref() {
                return s.wake();
            }
            // Taking the lock orders this wake after a sleeper's look at the queue: a worker
            // that looked and found it empty is waiting on the condvar by the time we hold it.
            let _guard = self.lock.lock();
            self.cv.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn a_sleeping_worker_gets_every_message_and_sees_the_disconnect() {
        let (tx, rx) = crossbeam_channel::bounded::<u32>(4);
        let wait = Arc::new(IdleWait::default());
        let worker = {
            let wait = wait.clone();
            std::thread::spawn(move || {
                let mut got = Vec::new();
                while let Ok(v) = wait.recv(&rx, (0, 0), || None) {
                    got.push(v);
                }
                got
            })
        };
        for v in 0..200 {
            tx.send(v).unwrap();
            wait.wake_one();
            if v % 50 == 0 {
                // Let the worker fall asleep now and then.
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        drop(tx);
        // A disconnect is not a message: the sleeper is woken by hand, as shutdown does with
        // its stop messages.
        while !worker.is_finished() {
            wait.wake_one();
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(worker.join().unwrap(), (0..200).collect::<Vec<_>>());
    }

    /// What the HTTP server's connection lane relies on: a job that an idle worker submits from
    /// its sleeper (it read a request there) is lent to that worker, which runs it next on the
    /// same thread; nothing is queued and no other worker is woken.
    #[test]
    fn a_job_submitted_from_a_resting_workers_sleeper_runs_on_that_worker_without_a_wake() {
        use crate::pool::Pool;
        use std::sync::atomic::AtomicUsize;
        use std::sync::mpsc;
        use std::thread::ThreadId;

        type Answer = Result<ThreadId, crate::Error>;
        #[derive(Default)]
        struct SubmitOnce {
            pool: Mutex<Option<Pool<(), ThreadId>>>,
            slept_on: Mutex<Option<ThreadId>>,
            answer: Mutex<Option<mpsc::Sender<mpsc::Receiver<Answer>>>>,
            wakes: AtomicUsize,
        }
        impl Sleeper for SubmitOnce {
            fn sleep(&self) {
                match self.pool.lock().take() {
                    Some(pool) => {
                        *self.slept_on.lock() = Some(std::thread::current().id());
                        let (tx, rx) = mpsc::channel();
                        pool.submit_then((), None, move |r| tx.send(r).unwrap());
                        if let Some(to_test) = self.answer.lock().take() {
                            to_test.send(rx).unwrap();
                        }
                    }
                    None => std::thread::sleep(Duration::from_millis(1)),
                }
            }
            fn wake(&self) {
                self.wakes.fetch_add(1, Ordering::SeqCst);
            }
        }

        let pool = Pool::builder()
            .workers(2)
            .build(|(), _ctx| std::thread::current().id())
            .unwrap();
        let sleeper = Arc::new(SubmitOnce::default());
        *sleeper.pool.lock() = Some(pool.clone());
        let (to_test, from_sleeper) = mpsc::channel();
        *sleeper.answer.lock() = Some(to_test);
        pool.set_sleeper(Some(sleeper.clone()));
        let rx = from_sleeper.recv_timeout(Duration::from_secs(10)).unwrap();
        let ran_on = rx.recv_timeout(Duration::from_secs(10)).unwrap().unwrap();
        assert_eq!(
            Some(ran_on),
            *sleeper.slept_on.lock(),
            "run by the worker that submitted it"
        );
        assert_eq!(
            sleeper.wakes.load(Ordering::SeqCst),
            0,
            "no other worker was woken"
        );
        // A job from outside still goes through the queue to a worker resting in the sleeper.
        assert_eq!(pool.call(()).map(|_| ()), Ok(()));
        pool.set_sleeper(None);
        pool.shutdown(Duration::from_secs(5));
    }
}
