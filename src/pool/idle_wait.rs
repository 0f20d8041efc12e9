//! [`IdleWait`]: how an idle worker waits for the queue. It looks a few times (a spin of a
//! microsecond or so, no `sched_yield`), then sleeps on a condition variable until whoever puts a
//! message in the queue wakes one sleeper.
//!
//! crossbeam-channel's blocking `recv` backs off with `sched_yield` calls before it parks; with
//! more runnable threads than cores (a CPU-bound neighbour, or the reactor and the workers on two
//! cores) a yield can cost the yielding thread a whole scheduler slice while it stays runnable, so
//! a job queued meanwhile waits milliseconds for a worker that was never asleep. A worker that
//! sleeps here is woken at once by the enqueuer (a futex wake), and a sleeper gets the wake-up
//! priority the scheduler gives to threads that slept.

use std::sync::atomic::{fence, AtomicUsize, Ordering};

use crossbeam_channel::{Receiver, TryRecvError};
use parking_lot::{Condvar, Mutex};

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
}

impl IdleWait {
    /// The next message, or `Err` when the queue is disconnected. Blocks until there is one.
    pub(crate) fn recv<T>(&self, rx: &Receiver<T>) -> Result<T, TryRecvError> {
        for _ in 0..SPINS {
            match rx.try_recv() {
                Err(TryRecvError::Empty) => std::hint::spin_loop(),
                other => return other,
            }
        }
        let mut guard = self.lock.lock();
        loop {
            self.sleepers.fetch_add(1, Ordering::SeqCst);
            // Pairs with the fence in `wake_one`: either the enqueuer sees this sleeper, or this
            // look sees its message.
            fence(Ordering::SeqCst);
            match rx.try_recv() {
                Err(TryRecvError::Empty) => {}
                other => {
                    self.sleepers.fetch_sub(1, Ordering::SeqCst);
                    return other;
                }
            }
            self.cv.wait(&mut guard);
            self.sleepers.fetch_sub(1, Ordering::SeqCst);
            match rx.try_recv() {
                Err(TryRecvError::Empty) => {}
                other => return other,
            }
        }
    }

    /// After a message was put in the queue: wake one sleeping worker, if any.
    pub(crate) fn wake_one(&self) {
        fence(Ordering::SeqCst);
        if self.sleepers.load(Ordering::SeqCst) > 0 {
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
                while let Ok(v) = wait.recv(&rx) {
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
}
