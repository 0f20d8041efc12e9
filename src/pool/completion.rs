//! [`AnswerCell`]: the one-shot cell that carries a job's single answer to whoever waits for it (a
//! parked caller, a ticket, an async task, or a completion callback). The first answer wins; a later one is
//! dropped. A leaf, like rayon-core's `latch.rs`.

use std::sync::atomic::Ordering;
use std::task::{Poll, Waker};
use std::time::Instant;

use crate::error::Error;
use crate::sync::thread::{self, Thread};
use crate::sync::{AtomicBool, Mutex};

/// Who is told when the answer is there.
pub(crate) enum Waiter<Resp> {
    /// Nobody yet: a blocking caller will register itself, or take the answer when it looks.
    Nobody,
    /// A parked thread.
    Thread(Thread),
    /// An async task (a [`Ticket`](crate::Ticket) polled as a future): woken, never polled for.
    Task(Waker),
    /// A completion callback, called once with the answer and, when the thread that made the
    /// answer read the clock just before (a worker, after its handler), that reading: the
    /// callback's "now", so that it needs no clock read of its own.
    Callback(Callback<Resp>),
}

/// A completion callback: the answer, and the answering thread's clock reading if it has one.
pub(crate) type Callback<Resp> = Box<dyn FnOnce(Result<Resp, Error>, Option<Instant>) + Send>;

enum Outcome<Resp> {
    Pending(Waiter<Resp>),
    Ready(Result<Resp, Error>),
    Taken,
}

/// A one-shot cell: the first `complete` wins, later ones are dropped; the answer is taken once.
pub(crate) struct AnswerCell<Resp> {
    done: AtomicBool,
    outcome: Mutex<Outcome<Resp>>,
}

/// How many times a waiter looks at the cell before it parks. Spinning briefly saves the wake-up
/// of a parked thread (a futex call each way) when the answer is a microsecond away.
const SPIN_ROUNDS: u32 = 120;

impl<Resp> AnswerCell<Resp> {
    pub(crate) fn new(waiter: Waiter<Resp>) -> Self {
        AnswerCell {
            done: AtomicBool::new(false),
            outcome: Mutex::new(Outcome::Pending(waiter)),
        }
    }

    /// Deliver the answer. Returns false (and drops `result`) if the job was answered already.
    ///
    /// `first` runs with the answer once this call has won, before the waiter can see it (the
    /// pool counts the answer there, so a caller that reads the stats after its answer finds it
    /// counted).
    pub(crate) fn complete(
        &self,
        result: Result<Resp, Error>,
        first: impl FnOnce(&Result<Resp, Error>),
    ) -> bool {
        self.complete_at(result, None, first)
    }

    /// [`complete`](Self::complete), with the clock reading `at` the answer was made at (passed
    /// to a completion callback; `None`: not read).
    pub(crate) fn complete_at(
        &self,
        result: Result<Resp, Error>,
        at: Option<Instant>,
        first: impl FnOnce(&Result<Resp, Error>),
    ) -> bool {
        let mut outcome = self.outcome.lock();
        let waiter = match std::mem::replace(&mut *outcome, Outcome::Taken) {
            Outcome::Pending(w) => w,
            other => {
                *outcome = other;
                return false;
            }
        };
        first(&result);
        match waiter {
            Waiter::Callback(cb) => {
                self.done.store(true, Ordering::Release);
                drop(outcome);
                // The callback runs on a worker or on the watchdog: a panic in it must not take
                // that thread down with it.
                let run = std::panic::AssertUnwindSafe(move || cb(result, at));
                if let Err(payload) = std::panic::catch_unwind(run) {
                    log::error!(
                        "a submit_then completion callback panicked: {}; the pool goes on. Fix \
                         the callback (it runs on a pool thread and must not panic).",
                        crate::util::panic_message(payload.as_ref())
                    );
                }
            }
            Waiter::Thread(t) => {
                *outcome = Outcome::Ready(result);
                self.done.store(true, Ordering::Release);
                drop(outcome);
                t.unpark();
            }
            Waiter::Task(waker) => {
                *outcome = Outcome::Ready(result);
                self.done.store(true, Ordering::Release);
                drop(outcome);
                waker.wake();
            }
            Waiter::Nobody => {
                *outcome = Outcome::Ready(result);
                self.done.store(true, Ordering::Release);
            }
        }
        true
    }

    /// Take the waiter back from a job that was never queued (a refused submission).
    pub(crate) fn take_waiter(&self) -> Waiter<Resp> {
        let mut outcome = self.outcome.lock();
        match std::mem::replace(&mut *outcome, Outcome::Taken) {
            Outcome::Pending(w) => w,
            other => {
                *outcome = other;
                Waiter::Nobody
            }
        }
    }

    pub(crate) fn is_done(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }

    /// Take the answer if it is there (once).
    pub(crate) fn try_take(&self) -> Option<Result<Resp, Error>> {
        if !self.is_done() {
            return None;
        }
        let mut outcome = self.outcome.lock();
        match std::mem::replace(&mut *outcome, Outcome::Taken) {
            Outcome::Ready(r) => Some(r),
            other => {
                *outcome = other;
                None
            }
        }
    }

    /// The answer if it is there (taken once: `Ready(None)` if it was taken already); otherwise
    /// `waker` is registered, replacing an earlier waiter, and woken by the answer.
    pub(crate) fn poll_take(&self, waker: &Waker) -> Poll<Option<Result<Resp, Error>>> {
        if self.is_done() {
            return Poll::Ready(self.try_take());
        }
        let mut outcome = self.outcome.lock();
        match &mut *outcome {
            Outcome::Pending(w) => {
                debug_assert!(
                    !matches!(w, Waiter::Callback(_)),
                    "a callback job is not polled"
                );
                if !matches!(w, Waiter::Task(old) if old.will_wake(waker)) {
                    *w = Waiter::Task(waker.clone());
                }
                Poll::Pending
            }
            Outcome::Ready(_) => match std::mem::replace(&mut *outcome, Outcome::Taken) {
                Outcome::Ready(r) => Poll::Ready(Some(r)),
                _ => unreachable!("matched Ready above"),
            },
            Outcome::Taken => Poll::Ready(None),
        }
    }

    /// Wait for the answer until `until` (forever with `None`). Spins briefly, then parks.
    pub(crate) fn wait_until(&self, until: Option<Instant>) -> Option<Result<Resp, Error>> {
        match self.spin_take() {
            Some(r) => Some(r),
            None => self.park_until(until),
        }
    }

    /// The answer if it comes within a short spin (half with a spin hint, half with a yield);
    /// `None` if it did not, or was taken already.
    pub(crate) fn spin_take(&self) -> Option<Result<Resp, Error>> {
        let rounds = crate::sync::spins(SPIN_ROUNDS);
        for round in 0..rounds {
            if self.is_done() {
                return self.try_take();
            }
            if round < rounds / 2 {
                std::hint::spin_loop();
            } else {
                thread::yield_now();
            }
        }
        None
    }

    /// [`wait_until`](Self::wait_until) without its spin (the caller spun already): register
    /// this thread as the waiter and park until the answer or `until`.
    pub(crate) fn park_until(&self, until: Option<Instant>) -> Option<Result<Resp, Error>> {
        {
            let mut outcome = self.outcome.lock();
            match &mut *outcome {
                Outcome::Pending(w) => *w = Waiter::Thread(thread::current()),
                Outcome::Ready(_) => {
                    drop(outcome);
                    return self.try_take();
                }
                Outcome::Taken => return None,
            }
        }
        loop {
            if self.is_done() {
                return self.try_take();
            }
            match until {
                None => thread::park(),
                Some(t) => {
                    let now = Instant::now();
                    if now >= t {
                        return None;
                    }
                    thread::park_timeout(t - now);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::{mpsc, Arc};
    use std::thread;
    use std::time::Duration;

    fn shut(pool: &str) -> Error {
        Error::ShuttingDown { pool: pool.into() }
    }

    #[test]
    fn first_completion_wins_and_the_late_one_is_dropped() {
        let cell = AnswerCell::new(Waiter::Nobody);
        let counted = AtomicUsize::new(0);
        let count = |_: &Result<u32, Error>| {
            counted.fetch_add(1, Ordering::SeqCst);
        };
        assert!(!cell.is_done());
        assert!(cell.complete(Ok(1), count));
        assert!(
            !cell.complete(Err(shut("late")), count),
            "a late answer must lose"
        );
        assert!(!cell.complete(Ok(2), count));
        assert_eq!(
            counted.load(Ordering::SeqCst),
            1,
            "only the winner is counted"
        );
        assert!(cell.is_done());
        assert_eq!(cell.try_take(), Some(Ok(1)));
    }

    #[test]
    fn the_answer_is_taken_once() {
        let cell = AnswerCell::new(Waiter::Nobody);
        assert_eq!(cell.try_take(), None, "nothing to take before the answer");
        cell.complete(Ok::<u32, Error>(7), |_| {});
        assert_eq!(cell.try_take(), Some(Ok(7)));
        assert_eq!(cell.try_take(), None);
        assert_eq!(cell.wait_until(Some(Instant::now())), None);
        assert!(cell.is_done(), "taken is still done");
        assert!(
            !cell.complete(Ok(8), |_| {}),
            "a taken cell takes no new answer"
        );
    }

    #[test]
    fn a_callback_gets_the_first_answer_once() {
        let (tx, rx) = mpsc::channel();
        let cell = AnswerCell::new(Waiter::Callback(Box::new(move |r, _| tx.send(r).unwrap())));
        assert!(cell.complete(Ok::<u32, Error>(3), |_| {}));
        assert!(!cell.complete(Ok(4), |_| {}));
        assert_eq!(rx.try_recv().unwrap(), Ok(3));
        assert!(rx.try_recv().is_err(), "the callback runs once");
        assert!(cell.is_done());
    }

    #[test]
    fn a_refused_job_gives_its_waiter_back_once() {
        let cell = AnswerCell::<u32>::new(Waiter::Callback(Box::new(|_, _| {})));
        assert!(matches!(cell.take_waiter(), Waiter::Callback(_)));
        assert!(matches!(cell.take_waiter(), Waiter::Nobody));
        assert!(
            !cell.complete(Ok(1), |_| {}),
            "no answer after the waiter was taken"
        );
    }

    struct CountWakes(AtomicUsize);

    impl std::task::Wake for CountWakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_polled_cell_wakes_its_task_once_with_the_answer() {
        let wakes = Arc::new(CountWakes(AtomicUsize::new(0)));
        let waker = Waker::from(wakes.clone());
        let cell = AnswerCell::<u32>::new(Waiter::Nobody);
        assert!(cell.poll_take(&waker).is_pending());
        assert!(
            cell.poll_take(&waker).is_pending(),
            "a second poll re-registers"
        );
        assert_eq!(wakes.0.load(Ordering::SeqCst), 0, "no answer, no wake");
        assert!(cell.complete(Ok(5), |_| {}));
        assert_eq!(
            wakes.0.load(Ordering::SeqCst),
            1,
            "the answer wakes the task"
        );
        assert!(!cell.complete(Ok(6), |_| {}));
        assert_eq!(
            wakes.0.load(Ordering::SeqCst),
            1,
            "a late answer wakes nobody"
        );
        assert_eq!(cell.poll_take(&waker), Poll::Ready(Some(Ok(5))));
        assert_eq!(cell.poll_take(&waker), Poll::Ready(None), "taken once");
    }

    #[test]
    fn wait_times_out_without_an_answer_and_wakes_on_one() {
        let cell = Arc::new(AnswerCell::<u32>::new(Waiter::Nobody));
        let t0 = Instant::now();
        assert_eq!(cell.wait_until(Some(t0 + Duration::from_millis(30))), None);
        assert!(
            t0.elapsed() >= Duration::from_millis(30),
            "returned before its time"
        );

        let answerer = {
            let cell = cell.clone();
            thread::spawn(move || {
                thread::sleep(Duration::from_millis(20));
                cell.complete(Ok(9), |_| {})
            })
        };
        let t1 = Instant::now();
        let got = cell.wait_until(Some(t1 + Duration::from_secs(30)));
        assert_eq!(got, Some(Ok(9)));
        assert!(
            t1.elapsed() < Duration::from_secs(20),
            "a waiting thread is woken by the answer, not left to its timeout"
        );
        assert!(answerer.join().unwrap());
    }
}

/// loom models (`RUSTFLAGS="--cfg loom" cargo test --release --lib loom`, run by `.ci/run`): every
/// interleaving of the answerer and the waiter, up to loom's preemption bound.
#[cfg(all(test, loom))]
mod loom_models {
    use super::*;
    use loom::sync::atomic::AtomicUsize;
    use loom::sync::Arc;
    use loom::thread as lthread;

    /// An answer set on one thread reaches the waiter parked on another exactly once: the
    /// waiter never sleeps through it (a lost wake-up is a deadlock loom reports).
    #[test]
    fn loom_an_answer_reaches_a_parked_waiter_exactly_once() {
        loom::model(|| {
            let cell = Arc::new(AnswerCell::<u32>::new(Waiter::Nobody));
            let answerer = {
                let cell = cell.clone();
                lthread::spawn(move || cell.complete(Ok(7), |_| {}))
            };
            assert_eq!(cell.wait_until(None), Some(Ok(7)));
            assert_eq!(cell.try_take(), None, "taken once");
            assert!(answerer.join().unwrap());
        });
    }

    /// Two answers race (the worker's and the watchdog's): one wins, is counted once, and is the
    /// one the waiter gets.
    #[test]
    fn loom_of_two_racing_answers_the_waiter_gets_the_one_counted() {
        loom::model(|| {
            let cell = Arc::new(AnswerCell::<u32>::new(Waiter::Nobody));
            let counted = Arc::new(AtomicUsize::new(0));
            let answer = |v: u32| {
                let (cell, counted) = (cell.clone(), counted.clone());
                lthread::spawn(move || {
                    cell.complete(Ok(v), |_| {
                        counted.fetch_add(1, Ordering::Relaxed);
                    })
                })
            };
            let (one, two) = (answer(1), answer(2));
            let got = cell.wait_until(None);
            let (won1, won2) = (one.join().unwrap(), two.join().unwrap());
            assert!(won1 != won2, "exactly one answer wins");
            assert_eq!(got, Some(Ok(if won1 { 1 } else { 2 })));
            assert_eq!(counted.load(Ordering::Relaxed), 1, "counted once");
        });
    }

    struct CountWakes(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for CountWakes {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// A task that polled before the answer came is woken by it (no lost wake-up), and gets it.
    #[test]
    fn loom_a_polled_task_is_woken_by_the_answer() {
        loom::model(|| {
            let cell = Arc::new(AnswerCell::<u32>::new(Waiter::Nobody));
            let wakes = std::sync::Arc::new(CountWakes(Default::default()));
            let waker = Waker::from(wakes.clone());
            let answerer = {
                let cell = cell.clone();
                lthread::spawn(move || cell.complete(Ok(5), |_| {}))
            };
            match cell.poll_take(&waker) {
                Poll::Ready(got) => {
                    assert_eq!(got, Some(Ok(5)));
                    answerer.join().unwrap();
                }
                Poll::Pending => {
                    answerer.join().unwrap();
                    assert_eq!(
                        wakes.0.load(Ordering::SeqCst),
                        1,
                        "the answer woke the task"
                    );
                    assert_eq!(cell.poll_take(&waker), Poll::Ready(Some(Ok(5))));
                }
            }
        });
    }

    /// A completion callback runs once, with the winning answer, whichever thread wins.
    #[test]
    fn loom_a_callback_runs_once() {
        loom::model(|| {
            let ran = Arc::new(AtomicUsize::new(0));
            let cell = {
                let ran = ran.clone();
                Arc::new(AnswerCell::<u32>::new(Waiter::Callback(Box::new(
                    move |r, _| {
                        assert!(matches!(r, Ok(1 | 2)));
                        ran.fetch_add(1, Ordering::Relaxed);
                    },
                ))))
            };
            let answer = |v: u32| {
                let cell = cell.clone();
                lthread::spawn(move || cell.complete(Ok(v), |_| {}))
            };
            let (one, two) = (answer(1), answer(2));
            assert!(one.join().unwrap() != two.join().unwrap());
            assert_eq!(ran.load(Ordering::Relaxed), 1);
            assert!(cell.is_done());
        });
    }
}
