//! [`IdleWait`]: how an idle worker waits for the queue. It looks a few times (a spin of a
//! microsecond or so, no `sched_yield`), then sleeps on a condition variable until whoever puts a
//! message in the queue wakes one sleeper; or, when the pool's owner installed a [`Sleeper`] (the
//! HTTP server does), sleeps there: the server's idle workers wait on its connections, and the
//! worker that reads a request runs it ([`resting_worker`](lend::resting_worker): a job submitted from a resting
//! worker's own thread is lent to that worker instead of queued, so no other thread is woken).
//!
//! crossbeam-channel's blocking `recv` backs off with `sched_yield` calls before it parks; with
//! more runnable threads than cores (a CPU-bound neighbour, or the reactor and the workers on two
//! cores) a yield can cost the yielding thread a whole scheduler slice while it stays runnable, so
//! a job queued meanwhile waits milliseconds for a worker that was never asleep. A worker that
//! sleeps here is woken at once by the enqueuer (a futex wake), and a sleeper gets the wake-up
//! priority the scheduler gives to threads that slept.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crossbeam_channel::{Receiver, SendTimeoutError, Sender, TryRecvError, TrySendError};

mod lend;

use crate::sync::CacheLine;
use crate::sync::{fence, AtomicUsize, Condvar, Mutex, RwLock};

/// Where an idle worker waits instead of the pool's condition variable, installed by the pool's
/// owner ([`Pool::set_sleeper`](super::Pool::set_sleeper)). The HTTP server's sleeper waits on
/// the connections: a worker that finds a complete request there submits it from its own thread,
/// and that job comes back to it (see [`resting_worker`](lend::resting_worker)).
pub(crate) trait Sleeper: Send + Sync {
    /// Block the calling idle worker until [`wake`](Self::wake) is called, or until it has done
    /// some of the owner's work (which may have lent it a job), or a while has passed. Spurious
    /// returns are fine: the worker looks at the queue and comes back.
    fn sleep(&self);
    /// Wake one worker blocked in [`sleep`](Self::sleep) (a message was queued).
    fn wake(&self);
}

pub(crate) use lend::{Lend, Resting};

/// The pool's queue: the bounded channel and the idle workers that sleep on it. Every message put
/// in wakes one sleeper, unless a worker spins on the queue (it takes the message, and passes a
/// wake-up on if more are queued); the fields are this file's, so no message can go in without
/// its wake-up.
pub(crate) struct JobQueue<T> {
    tx: Sender<T>,
    rx: Receiver<T>,
    wait: IdleWait,
}

impl<T> JobQueue<T> {
    pub(crate) fn new(capacity: usize) -> Self {
        let (tx, rx) = crossbeam_channel::bounded(capacity);
        JobQueue {
            tx,
            rx,
            wait: IdleWait::default(),
        }
    }

    /// Put `msg` in (refused when full), waking one sleeping worker.
    #[inline]
    pub(crate) fn push(&self, msg: T) -> Result<(), TrySendError<T>> {
        self.tx.try_send(msg)?;
        self.wait.wake_one();
        Ok(())
    }

    /// Put `msg` in, waiting for room until `until`; false if there was none by then.
    pub(crate) fn push_until(&self, msg: T, until: std::time::Instant) -> bool {
        match self.tx.send_deadline(msg, until) {
            Ok(()) => {
                self.wait.wake_one();
                true
            }
            Err(SendTimeoutError::Timeout(_) | SendTimeoutError::Disconnected(_)) => false,
        }
    }

    /// A message, if one is queued now.
    pub(crate) fn try_take(&self) -> Option<T> {
        self.rx.try_recv().ok()
    }

    /// Messages queued now.
    pub(crate) fn len(&self) -> usize {
        self.tx.len()
    }

    /// The next message for idle worker `index` of pool `pool` (see [`IdleWait::recv`]).
    #[inline]
    pub(crate) fn recv(
        &self,
        at: (usize, usize),
        lent: impl Fn() -> Option<T>,
        copy: &mut SleeperCopy,
    ) -> Result<T, TryRecvError> {
        self.wait.recv_with(&self.rx, at, lent, copy)
    }

    /// See [`IdleWait::set_sleeper`].
    #[cfg(feature = "http")]
    pub(crate) fn set_sleeper(&self, sleeper: Option<Arc<dyn Sleeper>>) {
        self.wait.set_sleeper(sleeper);
    }
}

/// What an idle worker takes messages from: the pool's queue (a crossbeam channel), or a model's
/// queue under loom (whose channel loom cannot see into).
pub(crate) trait Queue<T> {
    fn try_recv(&self) -> Result<T, TryRecvError>;
    fn is_empty(&self) -> bool;
}

impl<T> Queue<T> for Receiver<T> {
    #[inline]
    fn try_recv(&self) -> Result<T, TryRecvError> {
        Receiver::try_recv(self)
    }
    #[inline]
    fn is_empty(&self) -> bool {
        Receiver::is_empty(self)
    }
}

/// How many times an idle worker looks at the queue (with a spin hint in between) before it
/// sleeps.
const SPINS: u32 = 64;

#[derive(Default)]
struct Counts {
    /// Workers asleep (or about to be) in [`IdleWait::recv`].
    sleepers: AtomicUsize,
    /// Workers in their spin in [`IdleWait::recv`]: each takes a message before it sleeps, so
    /// an enqueuer that sees one wakes nobody (a futex wake, and a second worker woken for a job
    /// the spinner takes). A spinner that takes a message and sees more passes a wake-up on.
    spinning: AtomicUsize,
}

/// The sleeping side of the queue.
#[derive(Default)]
pub(crate) struct IdleWait {
    /// The counts the enqueuer reads (on a line of their own: the workers write them).
    counts: CacheLine<Counts>,
    lock: Mutex<()>,
    cv: Condvar,
    /// Read (locked) by each idle worker: apart from the queue's ends the enqueuer reads.
    sleeper: CacheLine<RwLock<Option<Arc<dyn Sleeper>>>>,
    /// Which installation of `sleeper` is in (written with it; unique across pools): a worker
    /// keeps its copy of the sleeper ([`SleeperCopy`]) while this has not changed.
    stamp: AtomicUsize,
}

/// Stamps of sleeper installations, unique in the process (0: none yet).
#[cfg(feature = "http")]
static NEXT_STAMP: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(1);

/// An idle worker's copy of its pool's sleeper, kept from one wait to the next and taken again
/// only when the pool installs another: no lock and no reference count per wait.
#[derive(Default)]
pub(crate) struct SleeperCopy {
    stamp: usize,
    sleeper: Option<Arc<dyn Sleeper>>,
}

impl SleeperCopy {
    /// Take `wait`'s sleeper again if it installed another since this copy was taken.
    #[inline]
    fn refresh(&mut self, wait: &IdleWait) {
        let stamp = wait.stamp.load(Ordering::Acquire);
        if self.stamp != stamp {
            // The stamp read before the sleeper: a newer one installed meanwhile is taken next
            // time.
            self.sleeper = wait.sleeper.read().clone();
            self.stamp = stamp;
        }
    }
}

impl IdleWait {
    /// The next message, or `Err` when the queue is disconnected. Blocks until there is one.
    /// `lent` is asked first after each sleep: the job this worker lent itself while it rested
    /// as worker `index` of pool `pool` (see [`resting_worker`](lend::resting_worker)).
    #[cfg(test)]
    pub(crate) fn recv<T>(
        &self,
        rx: &impl Queue<T>,
        at: (usize, usize),
        lent: impl Fn() -> Option<T>,
    ) -> Result<T, TryRecvError> {
        self.recv_with(rx, at, lent, &mut SleeperCopy::default())
    }

    /// [`recv`](Self::recv) with the worker's copy of the sleeper, refreshed here when stale.
    pub(crate) fn recv_with<T>(
        &self,
        rx: &impl Queue<T>,
        (pool, index): (usize, usize),
        lent: impl Fn() -> Option<T>,
        copy: &mut SleeperCopy,
    ) -> Result<T, TryRecvError> {
        copy.refresh(self);
        // With a sleeper, work comes through it, not the queue: no spin.
        let spins = if copy.sleeper.is_some() {
            0
        } else {
            crate::sync::spins(SPINS)
        };
        // Until this worker has looked once more after its spin, an enqueuer may have woken
        // nobody on its account (see `spinning`): the first message it takes until then, with more
        // behind it, passes a wake-up on.
        let mut spun = false;
        if spins > 0 {
            self.counts.spinning.fetch_add(1, Ordering::SeqCst);
            let mut got = None;
            for _ in 0..spins {
                match rx.try_recv() {
                    Err(TryRecvError::Empty) => std::hint::spin_loop(),
                    other => {
                        got = Some(other);
                        break;
                    }
                }
            }
            self.counts.spinning.fetch_sub(1, Ordering::SeqCst);
            if let Some(msg) = got {
                // Pairs with the fence in `wake_one`: an enqueuer that saw this spinner and woke
                // nobody queued its message before this look.
                fence(Ordering::SeqCst);
                return self.pass_on(rx, msg);
            }
            spun = true;
        }
        loop {
            copy.refresh(self);
            if let Some(s) = &copy.sleeper {
                if let Some(msg) = self.announce(rx) {
                    return if spun { self.pass_on(rx, msg) } else { msg };
                }
                spun = false;
                {
                    let _resting = Resting::enter(pool, index);
                    s.sleep();
                }
                self.counts.sleepers.fetch_sub(1, Ordering::SeqCst);
                if let Some(job) = lent() {
                    return Ok(job);
                }
            } else {
                let mut guard = self.lock.lock();
                if let Some(msg) = self.announce(rx) {
                    drop(guard);
                    return if spun { self.pass_on(rx, msg) } else { msg };
                }
                spun = false;
                // A sleeper installed since the look above notified before this lock was taken.
                if self.sleeper.read().is_none() {
                    self.cv.wait(&mut guard);
                }
                self.counts.sleepers.fetch_sub(1, Ordering::SeqCst);
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

    /// `msg` was taken: with more queued behind it, wake one more worker (an enqueuer that saw
    /// this one spin woke nobody).
    fn pass_on<T>(
        &self,
        rx: &impl Queue<T>,
        msg: Result<T, TryRecvError>,
    ) -> Result<T, TryRecvError> {
        if msg.is_ok() && !rx.is_empty() {
            self.wake_one();
        }
        msg
    }

    /// Count this worker as a sleeper, then look at the queue once more: a message (or the
    /// disconnect) found now is returned with the count undone.
    fn announce<T>(&self, rx: &impl Queue<T>) -> Option<Result<T, TryRecvError>> {
        self.counts.sleepers.fetch_add(1, Ordering::SeqCst);
        // Pairs with the fence in `wake_one`: either the enqueuer sees this sleeper, or this
        // look sees its message.
        fence(Ordering::SeqCst);
        match rx.try_recv() {
            Err(TryRecvError::Empty) => None,
            other => {
                self.counts.sleepers.fetch_sub(1, Ordering::SeqCst);
                Some(other)
            }
        }
    }

    /// Sleep in `sleeper` from now on (`None`: on the condition variable again). A worker asleep
    /// on the condition variable is woken to move; the previous sleeper's owner must release the
    /// workers blocked in it.
    #[cfg(feature = "http")]
    pub(crate) fn set_sleeper(&self, sleeper: Option<Arc<dyn Sleeper>>) {
        {
            let mut slot = self.sleeper.write();
            *slot = sleeper;
            self.stamp.store(
                NEXT_STAMP.fetch_add(1, Ordering::Relaxed),
                Ordering::Release,
            );
        }
        let _guard = self.lock.lock();
        self.cv.notify_all();
    }

    /// After a message was put in the queue: wake one sleeping worker, if any.
    pub(crate) fn wake_one(&self) {
        fence(Ordering::SeqCst);
        // A spinning worker takes a message before it sleeps (and passes a wake-up on if it
        // sees more): no sleeper is woken for it.
        if self.counts.sleepers.load(Ordering::SeqCst) > 0
            && self.counts.spinning.load(Ordering::SeqCst) == 0
        {
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
    #[cfg(feature = "http")]
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

    /// What the lane relies on when a connection's next request comes while its worker writes
    /// the answer: a job submitted (without waiting for it) from the answer of a job is run next
    /// by the worker that answers, even though another worker is idle; a blocking call from an
    /// answer, or a public submission (whose ticket the caller may wait on), still goes through
    /// the queue to the idle worker (lent, either would wait for itself for ever).
    #[test]
    fn a_job_submitted_from_a_workers_answer_runs_next_on_that_worker() {
        use crate::pool::Pool;
        use std::sync::mpsc;
        use std::thread::ThreadId;

        let pool = Pool::builder()
            .workers(2)
            .build(|(), _ctx| std::thread::current().id())
            .unwrap();
        let (tx, rx) = mpsc::channel::<(&str, ThreadId, ThreadId)>();
        let (p, t) = (pool.clone(), tx.clone());
        pool.submit_then_at((), None, 0, true, None, move |first, _| {
            let first = first.unwrap();
            let t2 = t.clone();
            p.submit_then_at((), None, 0, true, None, move |next, _| {
                t2.send(("next", first, next.unwrap())).unwrap();
            });
            // Queued, the idle worker would have taken it by now.
            std::thread::sleep(Duration::from_millis(200));
            t.send(("call", first, p.call(()).unwrap())).unwrap();
            t.send(("submit", first, p.submit(()).wait().unwrap()))
                .unwrap();
        });
        let mut got: Vec<_> = (0..3)
            .map(|_| {
                rx.recv_timeout(Duration::from_secs(10))
                    .expect("every job answered")
            })
            .collect();
        got.sort_unstable_by_key(|(what, ..)| *what);
        let [call, next, submit] = [got[0], got[1], got[2]];
        assert_eq!(next.2, next.1, "run by the worker that answered");
        assert_ne!(call.2, call.1, "a blocking call went to the other worker");
        assert_ne!(
            submit.2, submit.1,
            "a public submission went to the other worker"
        );
        pool.shutdown(Duration::from_secs(5));
    }
}

/// loom models (`RUSTFLAGS="--cfg loom" cargo test --release --lib loom`, run by `.ci/run`). The
/// queue is a model one whose push is a release and whose look an acquire, the weakest a real
/// queue gives: that an idle worker never sleeps through a message rests on `IdleWait`'s own
/// fences, not on the channel's.
#[cfg(all(test, loom))]
mod loom_models {
    use super::lend::resting_worker;
    use super::*;
    use loom::sync::atomic::AtomicBool;
    use loom::sync::Arc;
    use loom::thread as lthread;
    use std::collections::VecDeque;

    #[derive(Default)]
    struct ModelQueue {
        items: Mutex<VecDeque<u32>>,
        len: AtomicUsize,
    }

    impl ModelQueue {
        fn push(&self, v: u32) {
            self.items.lock().push_back(v);
            self.len.fetch_add(1, Ordering::Release);
        }
    }

    impl Queue<u32> for ModelQueue {
        fn try_recv(&self) -> Result<u32, TryRecvError> {
            if self.len.load(Ordering::Acquire) == 0 {
                return Err(TryRecvError::Empty);
            }
            let v = self.items.lock().pop_front().ok_or(TryRecvError::Empty)?;
            self.len.fetch_sub(1, Ordering::Relaxed);
            Ok(v)
        }
        fn is_empty(&self) -> bool {
            self.len.load(Ordering::Acquire) == 0
        }
    }

    /// A message queued while the worker goes to sleep on the condition variable wakes it.
    #[test]
    fn loom_a_message_queued_as_the_worker_sleeps_wakes_it() {
        loom::model(|| {
            let queue = Arc::new(ModelQueue::default());
            let wait = Arc::new(IdleWait::default());
            let producer = {
                let (queue, wait) = (queue.clone(), wait.clone());
                lthread::spawn(move || {
                    queue.push(1);
                    wait.wake_one();
                })
            };
            assert_eq!(wait.recv(&*queue, (0, 0), || None), Ok(1));
            producer.join().unwrap();
        });
    }

    /// Two messages, two sleeping workers: wake-ups may merge, but each worker gets one message
    /// (a worker that takes one and sees more passes a wake-up on). A worker still in its spin
    /// when a message comes is not woken for it: the model fails (a worker sleeps forever) if
    /// the spinner that takes one message does not pass a wake-up on for the next.
    #[test]
    fn loom_two_messages_reach_two_sleeping_workers() {
        loom::model(|| {
            let queue = Arc::new(ModelQueue::default());
            let wait = Arc::new(IdleWait::default());
            let worker = || {
                let (queue, wait) = (queue.clone(), wait.clone());
                lthread::spawn(move || wait.recv(&*queue, (0, 0), || None).unwrap())
            };
            let (a, b) = (worker(), worker());
            queue.push(1);
            wait.wake_one();
            queue.push(2);
            wait.wake_one();
            let mut got = [a.join().unwrap(), b.join().unwrap()];
            got.sort_unstable();
            assert_eq!(got, [1, 2]);
        });
    }

    const POOL: usize = 1;

    /// Stands for the HTTP server's lane: the first sleep reads a request and submits it from the
    /// worker's own thread (lent to it); later sleeps block until woken (an eventfd's semantics:
    /// wake-ups merge, none is lost).
    struct ModelSleeper {
        lend: Arc<Lend<u32>>,
        read: AtomicBool,
        woken: Mutex<bool>,
        cv: Condvar,
    }

    impl Sleeper for ModelSleeper {
        fn sleep(&self) {
            if !self.read.swap(true, Ordering::Relaxed) {
                let lends = |i: usize| (i == 0).then_some(&*self.lend);
                assert!(
                    Lend::offer_from_resting(lends, POOL, false, || 10),
                    "lent to me"
                );
                return;
            }
            let mut woken = self.woken.lock();
            while !*woken {
                self.cv.wait(&mut woken);
            }
            *woken = false;
        }
        fn wake(&self) {
            *self.woken.lock() = true;
            self.cv.notify_one();
        }
    }

    /// A job a resting worker lends itself is run by it once, and a job queued from another
    /// thread while the worker goes back to sleep wakes it.
    #[test]
    fn loom_a_lent_job_runs_once_and_a_queued_one_wakes_the_sleeper() {
        loom::model(|| {
            let queue = Arc::new(ModelQueue::default());
            let wait = Arc::new(IdleWait::default());
            let lend = Arc::new(Lend::new());
            wait.set_sleeper(Some(std::sync::Arc::new(ModelSleeper {
                lend: lend.clone(),
                read: AtomicBool::new(false),
                woken: Mutex::new(false),
                cv: Condvar::new(),
            })));
            let producer = {
                let (queue, wait) = (queue.clone(), wait.clone());
                lthread::spawn(move || {
                    queue.push(1);
                    wait.wake_one();
                })
            };
            let mut got = Vec::new();
            for _ in 0..2 {
                got.push(wait.recv(&*queue, (POOL, 0), || lend.take()).unwrap());
            }
            got.sort_unstable();
            assert_eq!(got, [1, 10], "the lent job and the queued one, each once");
            assert_eq!(lend.take(), None);
            assert_eq!(
                resting_worker(POOL, true),
                None,
                "not resting once out of recv"
            );
            producer.join().unwrap();
        });
    }

    /// The finishing lend (`worker.rs`): a job submitted while worker 0 answers its job is lent
    /// to worker 0 only for a submission nobody waits for on that thread, and only while the
    /// mark is on; worker 1, resting in its sleeper at the same time, lends to its own slot; the
    /// job is taken once after the answer (what `serve_jobs` runs next), never left in the slot.
    #[test]
    fn loom_a_job_lent_while_answering_is_taken_once_by_that_worker() {
        loom::model(|| {
            let lends = Arc::new([Lend::new(), Lend::new()]);
            let other = {
                let lends = lends.clone();
                lthread::spawn(move || {
                    let _resting = Resting::enter(POOL, 1);
                    let at = |i: usize| lends.get(i);
                    assert!(Lend::offer_from_resting(at, POOL, false, || 20));
                })
            };
            let at = |i: usize| lends.get(i);
            let next = {
                let _finishing = Resting::finishing(POOL, 0);
                assert!(
                    !Lend::offer_from_resting(at, POOL, false, || 9),
                    "a call is queued"
                );
                assert!(
                    Lend::offer_from_resting(at, POOL, true, || 10),
                    "lent to me"
                );
                assert!(
                    !Lend::offer_from_resting(at, POOL, true, || 11),
                    "one at a time"
                );
                lends[0].take()
            };
            assert_eq!(next, Some(10));
            assert!(!Lend::offer_from_resting(at, POOL, true, || 12), "mark off");
            other.join().unwrap();
            assert_eq!(lends[0].take(), None, "taken once");
            assert_eq!(lends[1].take(), Some(20), "worker 1's own");
        });
    }
}
